//! The allocation counts shown beside criterion's times are exact. One test in this binary:
//! the counter is process-wide, so no other test may allocate meanwhile.

use linkr_benches::support::{count_allocs, count_allocs_with_setup};

#[test]
fn allocations_per_iteration_are_exact() {
    let none = count_allocs("test/none", || std::hint::black_box(7u64) * 3);
    assert_eq!(none.allocs_per_iter, 0.0);
    assert_eq!(none.bytes_per_iter, 0.0);
    assert!(none.iters > 0);

    let one = count_allocs("test/one_box", || Box::new(std::hint::black_box(7u64)));
    assert_eq!(one.allocs_per_iter, 1.0, "{one:?}");
    assert_eq!(one.bytes_per_iter, 8.0, "{one:?}");

    let three = count_allocs("test/three", || {
        (vec![1u8; 100], String::from("linkr"), Box::new([0u32; 4]))
    });
    assert_eq!(three.allocs_per_iter, 3.0, "{three:?}");
    assert_eq!(three.bytes_per_iter, 100.0 + 5.0 + 16.0, "{three:?}");

    // The set-up's allocations are not the routine's.
    let counted = count_allocs_with_setup(
        "test/setup",
        || vec![0u8; 4096],
        |mut v: Vec<u8>| {
            v[0] = 1;
            v
        },
    );
    assert_eq!(counted.allocs_per_iter, 0.0, "{counted:?}");
    let counted = count_allocs_with_setup(
        "test/setup_and_routine",
        || vec![0u8; 4096],
        |v: Vec<u8>| (v, Box::new(std::hint::black_box(1u32))),
    );
    assert_eq!(counted.allocs_per_iter, 1.0, "{counted:?}");
    assert_eq!(counted.bytes_per_iter, 4.0, "{counted:?}");
}
