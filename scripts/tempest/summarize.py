"""Summarizes one tempest run for run-tempest.sh.

Reads the run's subunit v2 stream and the list of tests that were selected,
and gives every listed test exactly one outcome:

* its own result (success, fail, skip);
* or, when its class never ran its tests, the class's: a class skipped in
  setUpClass (missing extension, no DHCP agent, ...) makes each of its tests
  skipped with that reason; a class whose setUpClass failed makes each of its
  tests failed ("class setup failed");
* or "not run" when neither exists (tempest crashed or was stopped).

Failures of tearDownClass are reported on their own: they do not change the
tests' outcomes but make the run fail. For each failure the report gives the
first line of the error and, from tempest.log (debug), the test's last
request that got an HTTP error status, with both bodies.

Exit status: 0 no failure, 1 some failure, 2 no result at all.
Runs in the tempest virtualenv (needs python-subunit and testtools).
"""

import argparse
import collections
import datetime
import re
import sys

import subunit
import testtools

CLASS_EVENT = re.compile(r"^(setUpClass|tearDownClass) \((?P<cls>[\w.]+)\)$")
LOG_REQUEST = re.compile(
    r"^\S+ \S+ (?P<pid>\d+) INFO tempest\.lib\.common\.rest_client \[[^\]]*\] "
    r"Request \((?P<caller>[^)]*)\): (?P<status>\d{3}) (?P<method>[A-Z]+) (?P<url>\S+)"
)
LOG_DEBUG = re.compile(r"^\S+ \S+ (?P<pid>\d+) DEBUG tempest\.lib\.common\.rest_client ")
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")
MAX_BODY = 700


def strip_attrs(test_id):
    return test_id.split("[", 1)[0]


def class_of(test_id):
    return strip_attrs(test_id).rsplit(".", 1)[0]


def short(test_id):
    return strip_attrs(test_id).removeprefix("tempest.api.network.")


def read_subunit(path):
    tests = {}

    def on_test(test):
        tests[test["id"]] = test

    with open(path, "rb") as stream:
        result = testtools.StreamToDict(on_test)
        result.startTestRun()
        subunit.ByteStreamToStreamResult(stream, non_subunit_name="stdout").run(result)
        result.stopTestRun()
    return tests


def detail_text(test, name):
    content = test["details"].get(name)
    if content is None:
        return ""
    try:
        return content.as_text()
    except Exception:  # a binary attachment
        return ""


def error_line(traceback):
    """The exception line(s) that end a Python traceback, on one line."""
    lines = traceback.rstrip().splitlines()
    last_frame = -1
    for i, line in enumerate(lines):
        if line.startswith('  File "'):
            last_frame = i
    rest = lines[last_frame + 1 :] if last_frame >= 0 else lines
    # Drop the frame's code line and its ^^^ markers.
    while rest and rest[0].startswith("    "):
        rest = rest[1:]
    text = " | ".join(line.strip() for line in rest if line.strip())
    if not text:
        text = lines[-1].strip() if lines else "(no traceback)"
    return text if len(text) <= 600 else text[:600] + " ..."


def read_log(path):
    """The requests of tempest.log that got status >= 400, in order, each
    with its time, caller ("Class:method") and, from the debug entry that
    follows it, the request and response bodies."""
    errors = []
    pending = {}  # pid -> the error request waiting for its debug entry
    current = None  # (pid, [lines]) of the debug entry being read
    try:
        f = open(path, encoding="utf-8", errors="replace")
    except OSError:
        return errors

    def finish(entry):
        pid, lines = entry
        req = pending.pop(pid, None)
        if req is None:
            return
        text = "\n".join(lines)
        m = re.search(
            r"Request - Headers: .*?\n\s*Body: (?P<req>.*?)\n\s*Response - Headers: .*?\n\s*Body: (?P<resp>.*)",
            text,
            re.S,
        )
        if m:
            req["request_body"] = m.group("req").strip()
            # oslo.log ends debug records with " function path:line".
            req["response_body"] = re.sub(r" \S+ \S+\.py:\d+$", "", m.group("resp").strip())

    with f:
        for line in f:
            line = line.rstrip("\n")
            if LOG_LINE.match(line):
                if current is not None:
                    finish(current)
                    current = None
                m = LOG_REQUEST.match(line)
                if m:
                    if int(m.group("status")) >= 400:
                        req = {
                            "time": log_time(line),
                            "caller": m.group("caller"),
                            "status": m.group("status"),
                            "method": m.group("method"),
                            "url": m.group("url"),
                        }
                        errors.append(req)
                        pending[m.group("pid")] = req
                    else:
                        pending.pop(m.group("pid"), None)
                    continue
                m = LOG_DEBUG.match(line)
                if m and "Request - Headers:" in line:
                    current = (m.group("pid"), [line])
            elif current is not None:
                current[1].append(line)
        if current is not None:
            finish(current)
    return errors


def log_time(line):
    """A log line's local time, as an aware datetime (None if unreadable)."""
    try:
        return datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S.%f").astimezone()
    except ValueError:
        return None


def last_error(errors, test, class_name):
    """The last error response a test got: requests of its class (stestr
    runs a class in one worker) made while it ran (setUp, the test, its
    cleanups and tearDown)."""
    stamps = [t for t in test.get("timestamps") or [] if t is not None]
    if len(stamps) < 2 or stamps[0] == stamps[-1]:
        # No time span (a class-level event): its class's last setUpClass error.
        found = [r for r in errors if r["caller"] == class_name + ":setUpClass"]
        return found[-1] if found else None
    # Log times are cut to the millisecond; a request is logged once answered.
    start, stop = stamps[0] - datetime.timedelta(milliseconds=1), stamps[-1]
    prefix = class_name + ":"
    found = None
    for req in errors:
        t = req["time"]
        if t is not None and start <= t <= stop and req["caller"].startswith(prefix):
            found = req
    return found


def read_aliases(conf):
    """`[network-feature-enabled] api_extensions` of a tempest.conf."""
    section = None
    try:
        with open(conf, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if line.startswith("["):
                    section = line.strip("[]")
                elif section == "network-feature-enabled" and line.startswith("api_extensions"):
                    value = line.split("=", 1)[1].strip()
                    return [a for a in value.split(",") if a]
    except OSError:
        pass
    return None


def clip(text):
    text = text.replace("\n", " ")
    return text if len(text) <= MAX_BODY else text[:MAX_BODY] + " ..."


def url_path(url):
    m = re.match(r"^https?://[^/]+(?P<path>/.*)?$", url)
    return (m.group("path") or "/") if m else url


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subunit", required=True)
    parser.add_argument("--tests", required=True, help="output of tempest run --list-tests")
    parser.add_argument("--log", required=True, help="tempest.log (debug)")
    parser.add_argument("--report", required=True)
    parser.add_argument("--conf", help="the run's tempest.conf, for the advertised extensions")
    parser.add_argument("--header", default="")
    args = parser.parse_args()

    with open(args.tests, encoding="utf-8") as f:
        listed = [line.strip() for line in f if line.startswith("tempest.")]
    try:
        results = read_subunit(args.subunit)
    except OSError:
        results = {}
    results = {k: v for k, v in results.items() if v["status"] not in ("exists", None)}
    if not results:
        print("summarize.py: the subunit stream has no test results", file=sys.stderr)
        return 2

    by_name = {strip_attrs(k): v for k, v in results.items() if not CLASS_EVENT.match(k)}
    class_setup, class_teardown = {}, {}
    for test_id, test in results.items():
        m = CLASS_EVENT.match(test_id)
        if m:
            (class_setup if m.group(1) == "setUpClass" else class_teardown)[m.group("cls")] = test

    log_errors = read_log(args.log)

    outcome = {}  # name -> (status, error text, last error response)
    for test_id in listed:
        name = strip_attrs(test_id)
        cls = class_of(test_id)
        test = by_name.get(name)
        cls_name = cls.rsplit(".", 1)[-1]
        if test is not None:
            status = test["status"]
            if status in ("success", "xfail"):
                outcome[name] = ("passed", "", None)
            elif status == "skip":
                outcome[name] = ("skipped", detail_text(test, "reason").strip(), None)
            else:
                outcome[name] = ("failed", error_line(detail_text(test, "traceback")), last_error(log_errors, test, cls_name))
        elif cls in class_setup:
            setup = class_setup[cls]
            if setup["status"] == "skip":
                outcome[name] = ("skipped", detail_text(setup, "reason").strip(), None)
            else:
                outcome[name] = (
                    "failed",
                    "class setup failed: " + error_line(detail_text(setup, "traceback")),
                    last_error(log_errors, setup, cls_name),
                )
        else:
            outcome[name] = ("not run", "", None)

    counts = collections.Counter(status for status, _, _ in outcome.values())
    teardown_failures = {c: t for c, t in class_teardown.items() if t["status"] not in ("success", "skip", "xfail")}

    out = []
    if args.header:
        out.append(args.header)
    if args.conf:
        aliases = read_aliases(args.conf)
        if aliases is not None:
            out.append(f"advertised extensions ({len(aliases)}): {' '.join(aliases)}")
    out.append(
        f"{len(listed)} tests: {counts['passed']} passed, {counts['failed']} failed, "
        f"{counts['skipped']} skipped" + (f", {counts['not run']} not run" if counts["not run"] else "")
    )
    if teardown_failures:
        out.append(f"{len(teardown_failures)} classes failed in tearDownClass (listed below)")

    failed = sorted(n for n, (s, _, _) in outcome.items() if s == "failed")
    if failed:
        out.append("")
        out.append(f"FAILED ({len(failed)}):")
        for name in failed:
            _, text, req = outcome[name]
            out.append(f"- {short(name)}")
            out.append(f"    error: {text}")
            if req:
                out.append(
                    f"    last error response: {req['status']} {req['method']} {url_path(req['url'])} ({req['caller']})"
                )
                if req.get("request_body") not in (None, "", "None"):
                    out.append(f"      request:  {clip(req['request_body'])}")
                if req.get("response_body") is not None:
                    out.append(f"      response: {clip(req['response_body'])}")

    if teardown_failures:
        out.append("")
        out.append(f"TEARDOWN FAILED ({len(teardown_failures)}):")
        for cls, test in sorted(teardown_failures.items()):
            out.append(f"- {short(cls)}: {error_line(detail_text(test, 'traceback'))}")

    not_run = sorted(n for n, (s, _, _) in outcome.items() if s == "not run")
    if not_run:
        out.append("")
        out.append(f"NOT RUN ({len(not_run)}):")
        out.extend(f"- {short(n)}" for n in not_run)

    skipped = collections.defaultdict(list)
    for name, (status, text, _) in outcome.items():
        if status == "skipped":
            skipped[text or "(no reason given)"].append(name)
    if skipped:
        out.append("")
        out.append(f"SKIPPED ({counts['skipped']}), by reason:")
        for reason, names in sorted(skipped.items(), key=lambda kv: (-len(kv[1]), kv[0])):
            out.append(f"- {len(names)} x {reason}")
            classes = sorted({short(class_of(n)) for n in names})
            out.append(f"    in {', '.join(classes)}")

    text = "\n".join(out) + "\n"
    with open(args.report, "w", encoding="utf-8") as f:
        f.write(text)
    sys.stdout.write(text)
    # The closing line, in the plain form CI logs understand.
    print(f"tempest: {counts['passed']} passed, {counts['failed'] + counts['not run']} failed, {counts['skipped']} skipped")
    return 1 if (counts["failed"] or counts["not run"] or teardown_failures) else 0


if __name__ == "__main__":
    sys.exit(main())
