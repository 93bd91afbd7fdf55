#!/usr/bin/env python3
"""The reliability suite's report: reads what the cases printed, writes summary.json and index.html.

    reliability.py summarize --out DIR --runs RUNS.tsv --parts-runs PARTS.tsv [--mode M]
                             [--information NAME,...] [--commit C] [--duration S]
    reliability.py render SUMMARY.json OUT.html
    reliability.py split-log WORKSPACE.log OUTDIR     per-binary segments of a `cargo test` log
    reliability.py server-errors LINKR.log            5xx answers in a spawned linkr's access log

RUNS.tsv: one test binary a line: source file, its stdout log, exit code, seconds, origin.
PARTS.tsv: one part script a line: name, exit code, seconds, the part files it wrote in DIR/parts
(comma-separated; none: DIR/parts/NAME.json is tried).

A test case is a libtest test of a `reliability_*` test file; its verdict comes from libtest's
`test NAME ... ok|FAILED|ignored` (and the failures list), what was tried and the figures from
its one `RELIABILITY {json}` stdout line. Exit status of `summarize`: 1 when a gating case failed.
Standard library only.
"""

import html
import json
import os
import re
import sys
import time

STANDARD_FIGURES = [
    # (summary key, label, how cases combine, unit)
    ("requests_lost", "Requests lost", "sum", "count"),
    ("acknowledged_lost", "Acknowledged links lost", "sum", "count"),
    ("server_errors", "5xx responses seen", "sum", "count"),
    ("peak_rss_bytes", "Peak RSS (largest)", "max", "bytes"),
    ("recovery_ms", "Recovery time (longest)", "max", "ms"),
    ("schemathesis_cases", "Schemathesis cases", "sum", "count"),
    ("links_counted", "Acknowledged links checked", "sum", "count"),
]

TEST_START = re.compile(r"^test (\S+) \.\.\. ?(.*)$")
VERDICT = re.compile(r"^(ok|FAILED|ignored)\b")
RUNNING = re.compile(r"^\s*Running (\S+) \(")


def reliability_lines(text):
    """Every `RELIABILITY {json}` object in `text` (anywhere in a line)."""
    decoder = json.JSONDecoder()
    found = []
    for line in text.splitlines():
        at = line.find("RELIABILITY {")
        if at < 0:
            continue
        try:
            obj, _ = decoder.raw_decode(line[at + len("RELIABILITY "):])
        except ValueError:
            found.append({"case": None, "malformed": line[at:at + 300]})
            continue
        if isinstance(obj, dict):
            found.append(obj)
    return found


def libtest_results(text):
    """{test name: "ok"|"FAILED"|"ignored"|None} from libtest's output, captured or --nocapture,
    and {test name: reason} for the ignored ones that give one."""
    results = {}
    ignore_reasons = {}
    pending = None
    in_failures = False
    for line in text.splitlines():
        m = TEST_START.match(line)
        if m:
            name, rest = m.group(1), m.group(2)
            v = VERDICT.match(rest)
            if v:
                results[name] = v.group(1)
                if v.group(1) == "ignored" and rest.startswith("ignored, "):
                    ignore_reasons[name] = rest[len("ignored, "):]
                pending = None
            else:
                results.setdefault(name, None)
                pending = name
            continue
        if pending is not None:
            s = line.strip()
            if s in ("ok", "FAILED") or s.startswith("ignored"):
                results[pending] = "ignored" if s.startswith("ignored") else s
                if s.startswith("ignored, "):
                    ignore_reasons[pending] = s[len("ignored, "):]
                pending = None
                continue
        if line == "failures:":
            in_failures = True
            continue
        if line.startswith("test result:"):
            in_failures = False
            continue
        if in_failures and line.startswith("    ") and line.strip() in results:
            results[line.strip()] = "FAILED"
    return results, ignore_reasons


def short(name):
    return name.rsplit("::", 1)[-1]


def test_cases(source, log_path, exit_code, seconds, origin):
    """The cases of one test binary."""
    try:
        with open(log_path, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        text = ""
    results, ignore_reasons = libtest_results(text)
    lines = reliability_lines(text)
    by_case = {}
    for obj in lines:
        if obj.get("case"):
            by_case[obj["case"]] = obj
    cases = []
    used = set()
    for name, verdict in results.items():
        obj = by_case.get(name) or by_case.get(short(name))
        if obj is not None:
            used.add(obj["case"])
        case = {
            "case": short(name),
            "test": name,
            "source": source,
            "origin": origin,
            "tried": (obj or {}).get("tried") or "(the test printed no RELIABILITY line)",
            "figures": (obj or {}).get("figures") or {},
        }
        if verdict == "ok":
            if (obj or {}).get("skipped"):
                case["verdict"] = "skipped"
                case["reason"] = obj.get("reason", "")
            else:
                case["verdict"] = "passed"
        elif verdict == "ignored":
            case["verdict"] = "skipped"
            case["reason"] = "ignored: %s" % ignore_reasons.get(name, "#[ignore]")
        elif verdict == "FAILED":
            case["verdict"] = "failed"
            case["reason"] = "the test failed (its log: %s)" % log_path
        else:
            case["verdict"] = "failed"
            case["reason"] = "started but never finished (the binary ended, exit %s)" % exit_code
        cases.append(case)
    for obj in lines:
        name = obj.get("case")
        if name in used:
            continue
        cases.append({
            "case": name or "(malformed RELIABILITY line)",
            "test": name,
            "source": source,
            "origin": origin,
            "tried": obj.get("tried") or obj.get("malformed", ""),
            "figures": obj.get("figures") or {},
            "verdict": "failed",
            "reason": "a RELIABILITY line without a libtest result (exit %s)" % exit_code,
        })
    if not cases or (str(exit_code) != "0" and not any(c["verdict"] == "failed" for c in cases)):
        cases.append({
            "case": os.path.basename(source),
            "test": None,
            "source": source,
            "origin": origin,
            "tried": "build and run the test binary",
            "figures": {},
            "verdict": "failed" if str(exit_code) != "0" else "skipped",
            "reason": "the test files did not build (reports/reliability/logs/build.log)"
            if exit_code == "build-failed"
            else "stopped by the time limit (LINKR_RELIABILITY_TIMEOUT) after %s s" % seconds
            if str(exit_code) in ("124", "137")
            else ("the test binary exited %s (its log: %s)" % (exit_code, log_path))
            if str(exit_code) != "0" else "no tests in this file",
        })
    for c in cases:
        c["binary_seconds"] = seconds
    return cases


def part_case(parts_dir, name, exit_code, seconds, filename=None):
    path = os.path.join(parts_dir, filename or name + ".json")
    script = "scripts/%s.sh" % name
    if exit_code == "skipped-by-option":
        return {
            "case": name, "test": None, "source": script, "origin": "run", "part": name,
            "tried": "run %s" % script, "figures": {}, "verdict": "skipped",
            "reason": "not run: scripts/reliability.sh --skip %s" % name, "binary_seconds": 0.0,
        }
    try:
        with open(path, encoding="utf-8") as f:
            part = json.load(f)
    except (OSError, ValueError) as e:
        return {
            "case": name, "test": None, "source": script, "origin": "run", "part": name,
            "tried": "run %s" % script, "figures": {}, "verdict": "failed",
            "reason": "%s exited %s and left no readable part (%s)" % (script, exit_code, e),
            "binary_seconds": seconds,
        }
    case = {
        "case": part.get("case") or name,
        "test": None,
        "source": script,
        "origin": "run",
        "tried": part.get("tried") or "",
        "figures": part.get("figures") or {},
        "reason": part.get("reason") or "",
        "binary_seconds": seconds,
        "part": name,
        "part_file": os.path.splitext(os.path.basename(path))[0],
    }
    if str(exit_code) in ("124", "137"):
        case["verdict"] = "failed"
        case["reason"] = "stopped by the time limit (LINKR_RELIABILITY_TIMEOUT) after %s s" % seconds
    elif part.get("skipped"):
        case["verdict"] = "skipped"
    elif part.get("passed") and str(exit_code) == "0":
        case["verdict"] = "passed"
    else:
        case["verdict"] = "failed"
        if part.get("passed"):
            case["reason"] = ("%s; " % case["reason"] if case["reason"] else "") + \
                "%s exited %s" % (script, exit_code)
    return case


def number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def combine(cases):
    """The standard figures over all cases, and for the largest-of ones the case it came from."""
    out = {"figure_sources": {}}
    for key, _label, how, _unit in STANDARD_FIGURES:
        values = [c["figures"][key] for c in cases if number(c["figures"].get(key))]
        if key == "schemathesis_cases":
            values += [c["figures"]["cases"] for c in cases
                       if "schemathesis" in (c.get("part") or "") and number(c["figures"].get("cases"))
                       and not number(c["figures"].get(key))]
        if not values:
            out[key] = None
        elif how == "sum":
            out[key] = sum(values)
        else:
            out[key] = max(values)
            out["figure_sources"][key] = next(
                c["case"] for c in cases if c["figures"].get(key) == out[key])
    return out


def read_tsv(path):
    rows = []
    if path and os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    rows.append(line.rstrip("\n").split("\t"))
    return rows


def summarize(args):
    opts = parse_opts(args, {"--out": None, "--runs": None, "--parts-runs": None, "--mode": "full",
                             "--information": "", "--commit": "", "--duration": "0"})
    out = opts["--out"]
    cases = []
    for source, log, code, seconds, origin in read_tsv(opts["--runs"]):
        cases += test_cases(source, log, code, float(seconds), origin)
    for row in read_tsv(opts["--parts-runs"]):
        name, code, seconds = row[:3]
        written = [f for f in (row[3] if len(row) > 3 else "").split(",") if f]
        for filename in written or [None]:
            cases.append(part_case(os.path.join(out, "parts"), name, code, float(seconds), filename))
    information = {n for n in opts["--information"].split(",") if n}
    for c in cases:
        c["gate"] = not ({c["case"], c.get("part"), c.get("part_file"),
                          short(c.get("test") or "")} & information)
    summary = {
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "mode": opts["--mode"],
        "commit": opts["--commit"],
        "duration_s": round(float(opts["--duration"]), 1),
        "cases": len(cases),
        "passed": sum(c["verdict"] == "passed" for c in cases),
        "failed": sum(c["verdict"] == "failed" for c in cases),
        "skipped": sum(c["verdict"] == "skipped" for c in cases),
        "failed_gating": sum(c["verdict"] == "failed" and c["gate"] for c in cases),
    }
    summary.update(combine(cases))
    summary["results"] = cases
    with open(os.path.join(out, "summary.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2)
        f.write("\n")
    with open(os.path.join(out, "index.html"), "w", encoding="utf-8") as f:
        f.write(render_html(summary))
    for c in cases:
        figures = ", ".join("%s=%s" % (k, v) for k, v in c["figures"].items())
        print("%-8s %s  %s" % (c["verdict"].upper(), c["case"], figures))
    print("%d cases: %d passed, %d failed (%d gating), %d skipped" % (
        summary["cases"], summary["passed"], summary["failed"], summary["failed_gating"],
        summary["skipped"]))
    return 1 if summary["failed_gating"] else 0


def fmt_value(key, v, unit=None):
    if v is None:
        return "not measured"
    if not number(v):
        return str(v)
    if unit is None:
        unit = "bytes" if key.endswith("_bytes") else "ms" if key.endswith("_ms") else "count"
    if unit == "bytes":
        return "%.1f MiB" % (v / 1048576)
    if unit == "ms":
        return "%s ms" % format(v, ",")
    return format(v, ",") if isinstance(v, int) else "%g" % v


def e(s):
    return html.escape(str(s), quote=True)


CSS = """
body{font:15px/1.45 -apple-system,"Segoe UI","DejaVu Sans",Arial,sans-serif;color:#1f2328;
margin:0;background:#fff}
main{max-width:1200px;margin:0 auto;padding:20px 24px 40px;box-sizing:border-box}
h1{font-size:26px;margin:0 0 4px}h2{font-size:19px;margin:28px 0 8px}
.meta{color:#59636e;font-size:13px}
.banner{margin:16px 0;padding:12px 16px;border-radius:6px;font-weight:600;font-size:17px}
.banner.ok{background:#dafbe1;border:1px solid #4ac26b;color:#116329}
.banner.bad{background:#ffebe9;border:1px solid #ff8182;color:#a40e26}
table{border-collapse:collapse;width:100%;table-layout:fixed}
th,td{border:1px solid #d1d9e0;padding:6px 8px;text-align:left;vertical-align:top;
overflow-wrap:anywhere;word-break:break-word}
th{background:#f6f8fa;font-size:13px}
table.figures td.v{font-variant-numeric:tabular-nums;font-weight:600}
td.unmeasured{color:#59636e;font-weight:400}td.nonzero{color:#cf222e}
.verdict{display:inline-block;padding:2px 8px;border-radius:12px;font-size:13px;font-weight:700}
.verdict.passed{background:#1a7f37;color:#fff}.verdict.failed{background:#cf222e;color:#fff}
.verdict.skipped{background:#9a6700;color:#fff}
.src,.reason{color:#59636e;font-size:12px}
ul.figs{margin:0;padding-left:16px;font-size:13px}
code{font-family:"DejaVu Sans Mono",monospace;font-size:12.5px}
"""


def render_html(s):
    ok = s["failed"] == 0
    banner = "%d of %d cases passed, %d failed, %d skipped" % (
        s["passed"], s["cases"], s["failed"], s["skipped"])
    information_failed = s["failed"] - s.get("failed_gating", s["failed"])
    if information_failed:
        banner += " (%d of the failures information only)" % information_failed
    out = ["<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">",
           "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">",
           "<title>linkr reliability report</title><style>%s</style></head><body><main>" % CSS,
           "<h1>linkr reliability report</h1>",
           "<p class=\"meta\">%s run, generated %s, commit <code>%s</code>, %s s</p>" % (
               e(s.get("mode", "")), e(s.get("generated_at", "")), e(s.get("commit", "")),
               e(s.get("duration_s", ""))),
           "<div class=\"banner %s\" id=\"verdict\">%s</div>" % ("ok" if ok else "bad", e(banner)),
           "<h2>Figures</h2>",
           "<p class=\"meta\">Summed over the cases that report them (peak RSS and recovery: the "
           "largest). &ldquo;not measured&rdquo;: no case reported it in this run.</p>",
           "<table class=\"figures\"><colgroup><col style=\"width:40%\"><col></colgroup>"]
    for key, label, _how, unit in STANDARD_FIGURES:
        v = s.get(key)
        state = " unmeasured" if v is None else \
            " nonzero" if key in ("requests_lost", "acknowledged_lost", "server_errors") and v else ""
        source = (s.get("figure_sources") or {}).get(key)
        source = " <span class=\"src\">(%s)</span>" % e(source) if source else ""
        out.append("<tr><th>%s <code>%s</code></th><td class=\"v%s\" data-figure=\"%s\">%s%s"
                   "</td></tr>" % (e(label), e(key), state, e(key),
                                   "<span class=\"value\">%s</span>" % e(fmt_value(key, v, unit)), source))
    out.append("</table>")
    out.append("<h2>Cases</h2>")
    out.append("<table class=\"cases\"><colgroup><col style=\"width:9%\"><col style=\"width:27%\">"
               "<col style=\"width:38%\"><col style=\"width:26%\"></colgroup>"
               "<tr><th>Verdict</th><th>Case</th><th>What was tried</th><th>Figures</th></tr>")
    for c in s["results"]:
        figs = "".join("<li><code>%s</code>: %s</li>" % (e(k), e(fmt_value(k, v)))
                       for k, v in c["figures"].items())
        gate = "" if c.get("gate", True) else "<div class=\"reason\">information only: does not " \
                                                  "fail the run</div>"
        reason = "<div class=\"reason\">%s</div>" % e(c["reason"]) if c.get("reason") else ""
        out.append(
            "<tr class=\"case %s\"><td><span class=\"verdict %s\">%s</span></td>"
            "<td><code>%s</code><div class=\"src\">%s%s</div>%s</td><td>%s%s</td>"
            "<td>%s</td></tr>" % (
                e(c["verdict"]), e(c["verdict"]), e(c["verdict"]), e(c["case"]), e(c["source"]),
                "" if c.get("origin", "run") == "run" else " (result from %s)" % e(c["origin"]),
                gate, e(c["tried"]), reason,
                "<ul class=\"figs\">%s</ul>" % figs if figs else "<span class=\"src\">none</span>"))
    out.append("</table>")
    out.append(
        "<h2>How to read it</h2><p>Each row is one case: a test in a "
        "<code>service/tests/reliability_*.rs</code> or <code>loadgen/tests/reliability_*.rs</code> "
        "file (its verdict is the test's result; it asserts what must hold) or a part written by "
        "<code>scripts/schemathesis.sh</code>, <code>scripts/fuzz.sh</code> or "
        "<code>scripts/deny.sh</code>. <em>skipped</em> means the case could not run here and says "
        "why. The figures are what the case measured on this machine, in this run; "
        "<code>summary.json</code> beside this page holds the same data.</p>")
    out.append("</main></body></html>\n")
    return "".join(out)


def render(args):
    with open(args[0], encoding="utf-8") as f:
        summary = json.load(f)
    with open(args[1], "w", encoding="utf-8") as f:
        f.write(render_html(summary))
    return 0


def split_log(args):
    """Splits a `cargo test` log at cargo's `Running tests/NAME.rs (...)` lines; writes
    OUTDIR/NAME.log for each reliability_* binary and prints `NAME<TAB>exit` lines."""
    log, outdir = args
    segments = {}
    current = None
    with open(log, encoding="utf-8", errors="replace") as f:
        for line in f:
            m = RUNNING.match(line)
            if m:
                path = m.group(1)
                if path.endswith("/main.rs"):
                    path = os.path.dirname(path) + ".rs"
                base = os.path.basename(path)
                if m.group(1).startswith("tests/") and base.startswith("reliability_"):
                    current = base[:-3] if base.endswith(".rs") else base
                    segments[current] = []
                else:
                    current = None
                continue
            if current is not None:
                segments[current].append(line)
    os.makedirs(outdir, exist_ok=True)
    for name, lines in segments.items():
        with open(os.path.join(outdir, name + ".log"), "w", encoding="utf-8") as f:
            f.writelines(lines)
        text = "".join(lines)
        code = 0 if re.search(r"^test result: ok\.", text, re.M) else 1
        print("%s\t%d" % (name, code))
    return 0


def server_errors(args):
    """Counts the requests in a linkr JSON access log (`LINKR_LOG_FORMAT=json`,
    `LINKR_ACCESS_LOG=on`) logged after the first `/readyz` answered 200, and the 5xx among them;
    prints `{"requests": N, "server_errors": N, "server_error_lines": [...]}`, and each 5xx line
    on stderr.

    The spawning script polls `/readyz` one request at a time until it is answered 200, and starts
    its client only then: every line before is one of its polls (503 by design while linkr
    starts), every line after is its client's. A time rule ("started after `ready` was logged")
    failed once in CI: a poll routed to the starting app just before the switch logs a start
    time after it."""
    (log,) = args
    requests, errors, seen_ready = 0, [], False
    with open(log, encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if not isinstance(entry, dict) or entry.get("message") != "request":
                continue
            if not seen_ready:
                seen_ready = entry.get("route") == "/readyz" and entry.get("status") == 200
                continue
            status = entry.get("status")
            if isinstance(status, int):
                requests += 1
                if status >= 500:
                    errors.append(line.strip())
                    print("a 5xx in the access log: " + line.strip(), file=sys.stderr)
    print(json.dumps({"requests": requests, "server_errors": len(errors),
                      "server_error_lines": errors}))
    return 0


def parse_opts(args, defaults):
    opts = dict(defaults)
    it = iter(args)
    for a in it:
        if a not in opts:
            sys.exit("reliability.py: unknown option %s" % a)
        opts[a] = next(it)
    for k, v in opts.items():
        if v is None:
            sys.exit("reliability.py: %s is required" % k)
    return opts


def main(argv):
    commands = {"summarize": summarize, "render": render, "split-log": split_log,
                "server-errors": server_errors}
    if len(argv) < 2 or argv[1] not in commands:
        sys.exit(__doc__)
    return commands[argv[1]](argv[2:])


if __name__ == "__main__":
    sys.exit(main(sys.argv))
