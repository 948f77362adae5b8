#!/usr/bin/env python3
"""Side-by-side benchmarks of layertool and its peers, from the declarative list in suites.toml.

  bench.py [options] [SUITE | SUITE/BENCH ...]   time them (all runnable benches by default)
  bench.py --list                                what there is, with every command
  bench.py render RESULTS_DIR                    the report again, from the saved JSON
  bench.py tool NAME ARGS...                     the helpers suites.toml calls ({tool})

hyperfine times every run (its --prepare runs the untimed reset, its JSON is kept); this script
alternates the commands round by round, keeps the scratch file system, and renders the
BENCHMARKS.md tables. Python 3.11+ standard library only. See README.md.
"""
import argparse, datetime, fcntl, filecmp, gzip, hashlib, io, json, os, re, shlex, shutil, signal, socket, stat
import statistics, subprocess, sys, tarfile, tempfile, time, tomllib

HERE = os.path.dirname(os.path.abspath(__file__))
SUITES = os.environ.get("LKBENCH_SUITES", os.path.join(HERE, "suites.toml"))   # another list, to try things
PLACEHOLDER = re.compile(r"\{(\w+)\}")


def log(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def die(message):
    print(f"bench.py: {message}", file=sys.stderr)
    sys.exit(2)


def run_group(argv, cwd=None, stdout=subprocess.PIPE, stderr=subprocess.STDOUT):
    """Runs argv in a process group of its own, killed whole if this script is interrupted."""
    process = subprocess.Popen(argv, cwd=cwd, stdout=stdout, stderr=stderr, text=True, errors="replace", start_new_session=True)
    try:
        output, errors = process.communicate()
    except BaseException:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        raise
    return process.returncode, (output or "").strip(), (errors or "").strip()


def sh(command, cwd=None):
    """Runs a /bin/sh command; returns (exit code, stdout + stderr)."""
    return run_group(["sh", "-c", command], cwd=cwd)[:2]


def expand(text, values):
    """Fills in {name} for every known name (again, until nothing changes); leaves other braces alone."""
    for _ in range(10):
        new = PLACEHOLDER.sub(lambda m: str(values[m[1]]) if m[1] in values else m[0], text)
        if new == text:
            return new
        text = new
    die(f"placeholders nest too deep: {text[:100]}")


# ---------------------------------------------------------------------------------- the list
def load_benches():
    with open(SUITES, "rb") as f:
        spec = tomllib.load(f)
    benches = {}
    for suite_name, suite in spec["suites"].items():
        for bench in suite["bench"]:
            key = f"{suite_name}/{bench['name']}"
            benches[key] = dict(bench, key=key, suite=suite_name, suite_title=suite["title"])
    for bench in benches.values():
        own = bench.get("cmd", [])
        if "commands_from" in bench:   # the commands of another bench, filtered, own ones replacing by id
            base = [c for c in benches[bench["commands_from"]].get("cmd", [])
                    if c["id"] not in bench.get("skip", []) and c["id"] in bench.get("only", [c["id"]])]
            by_id = {c["id"]: c for c in own}
            own = [by_id.pop(c["id"], c) for c in base] + list(by_id.values())
        bench["commands"] = own
        bench["cases"] = [c if isinstance(c, dict) else {"name": c, "set": c} for c in bench["cases"]]
    return spec, benches


def runs_for(bench, case):
    runs = bench.get("runs", 5)
    return runs if isinstance(runs, int) else runs.get(case["name"], runs.get("default", 5))


def command_fields(bench, command, values):
    """A command's fields, bench defaults filled in, placeholders expanded."""
    values = {**values, **bench.get("vars", {}), **command.get("vars", {}), "id": command["id"]}
    fields = {k: command.get(k, bench.get(k, "")) for k in ("run", "prepare", "check", "size")}
    out = {k: expand(v, values) for k, v in fields.items()}
    missing = [n for n in (expand(n, values) for n in command.get("needs", []))
               if not (os.path.exists(n) if "/" in n else shutil.which(n))]
    out["missing"] = f"not installed ({', '.join(missing)})" if missing else ""
    return out


# ---------------------------------------------------------------------------------- the machine
def journal_state(path):
    rc, line = sh(f"findmnt -n -o SOURCE,FSTYPE,TARGET -T {shlex.quote(path)}")
    source, fstype, target = (line.split() + ["?"] * 3)[:3]
    journal = "n/a (" + fstype + ")"
    if fstype in ("ext4", "ext3"):
        dev = os.path.basename(os.path.realpath(source))
        journals = os.listdir("/proc/fs/jbd2") if os.path.isdir("/proc/fs/jbd2") else []
        journal = "yes" if any(n.startswith(dev + "-") for n in journals) else "no"
    return {"source": source, "fstype": fstype, "target": target, "journal": journal}


def unmount_under(directory):
    """Unmounts whatever is mounted at or under directory, deepest first."""
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4].replace("\\040", " ") for line in f]
    for point in sorted((p for p in points if p == directory or p.startswith(directory + "/")), reverse=True):
        if subprocess.run(["umount", point], stderr=subprocess.DEVNULL).returncode != 0:
            subprocess.run(["umount", "-l", point], stderr=subprocess.DEVNULL)


class Scratch:
    """The journaled scratch file system: a loop-mounted ext4 image (made if missing), or --scratch."""

    def __init__(self, args):
        self.mountpoint = None
        if args.scratch:
            root = os.path.realpath(args.scratch)
        else:
            image = args.scratch_image
            os.makedirs(os.path.dirname(image), exist_ok=True)
            self.lock = open(image + ".lock", "w")   # two runs on one ext4 image would wreck it
            try:
                fcntl.flock(self.lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                die(f"another bench.py is using {image}: wait for it, or give --scratch-image another path")
            if not os.path.exists(image):
                log(f"creating a {args.image_size} journaled ext4 image {image}")
                subprocess.run(["truncate", "-s", args.image_size, image], check=True)
                subprocess.run(["mkfs.ext4", "-q", "-F", image], check=True)
            self.mountpoint = root = tempfile.mkdtemp(prefix="lkbench-mnt.", dir="/var/tmp")
            if subprocess.run(["mount", "-o", "loop", image, root]).returncode != 0:
                os.rmdir(root)
                self.mountpoint = None
                die(f"could not loop-mount {image}")
        self.state = journal_state(root)
        if self.state["journal"] == "no" and not args.allow_unjournaled:
            self.close()
            die(f"{root} is ext4 WITHOUT a journal ({self.state['source']}): a delete-and-extract loop there "
                "times ext4's walk over recently freed inodes, not the tool (see Benchmarks/README.md). "
                "Use the default --scratch-image, or --allow-unjournaled")
        self.work = tempfile.mkdtemp(prefix="lkbench.", dir=root)

    def close(self):
        if getattr(self, "work", None):
            unmount_under(self.work)
            shutil.rmtree(self.work, ignore_errors=True)
            self.work = None
        if self.mountpoint:
            subprocess.run(["sync"])
            unmount_under(self.mountpoint)
            os.rmdir(self.mountpoint)
            self.mountpoint = None


def binary_facts(path):
    """sha256, build time and the git commit of the tree the binary was built in."""
    facts = {"path": path, "sha256": sha256_of(open(path, "rb"))[:12],
             "built": datetime.datetime.fromtimestamp(os.path.getmtime(path), datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
             "commit": "unknown (not built in a git work tree)"}
    repo = os.path.dirname(path)
    while repo != "/" and not os.path.exists(os.path.join(repo, ".git")):
        repo = os.path.dirname(repo)
    rc, head = sh(f"git -C {shlex.quote(repo)} rev-parse --short=12 HEAD")
    if rc == 0:
        rc, dirty = sh(f"git -C {shlex.quote(repo)} status --porcelain --untracked-files=no -- Sources Package.swift")
        facts["commit"] = head + (" + uncommitted changes under Sources/" if dirty else "")
    return facts


# ---------------------------------------------------------------------------------- timing
def hyperfine(commands, warmup, cwd):
    """One round: each command once (after its --prepare), in the given order. Returns hyperfine's results."""
    with tempfile.NamedTemporaryFile(suffix=".json", dir=cwd) as export:
        argv = ["hyperfine", "--style", "none", "--shell", "sh", "--ignore-failure", "--runs", "1",
                "--warmup", str(warmup), "--export-json", export.name]
        for c in commands:
            argv += ["--command-name", c["id"], "--prepare", c["prepare"] or "true", c["run"]]
        code, _, errors = run_group(argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if code != 0:
            return None, errors
        return json.load(open(export.name))["results"], ""


def run_case(bench, case, values, warmup, runs):
    """Times the bench's commands on one case, alternating them round by round."""
    w = values["w"]
    result = {"case": case["name"], "runs": runs, "unit_per": case.get("unit_per", 1), "rounds": [], "commands": {}}
    values = {**values, **case, **bench.get("vars", {}), "case": case["name"]}
    rc, output = sh(expand(bench.get("setup", "true"), values), cwd=w)
    if rc != 0:
        result["error"] = f"setup failed (exit {rc}): {output[-600:]}"
        log(f"{bench['key']} [{case['name']}]: {result['error']}")
        sh(expand(bench.get("teardown", "true"), values), cwd=w)
        return result
    if "vars_file" in bench:
        with open(expand(bench["vars_file"], values)) as f:
            values.update(line.rstrip("\n").split("=", 1) for line in f if "=" in line)
    commands = [dict(command_fields(bench, c, values), id=c["id"]) for c in bench["commands"]]
    for c in commands:
        result["commands"][c["id"]] = {"missing": c["missing"], "failed": "", "check": "", "check_ok": True, "size": None}
    active = [c for c in commands if not c["missing"]]
    for round_number in range(runs):
        if not active:
            break
        shift = round_number % len(active)
        order = active[shift:] + active[:shift]
        # the first round one command at a time: its output is checked before the next one starts
        groups = [[c] for c in order] if round_number == 0 else [order]
        for group in groups:
            results, error = hyperfine(group, warmup if round_number == 0 else 0, w)
            if results is None and len(group) > 1:   # a --prepare failed: find which, one at a time
                results = []
                for c in group:
                    single, error = hyperfine([c], 0, w)
                    results += single or [{"command": c["id"], "times": [], "exit_codes": [None], "error": error}]
            elif results is None:
                results = [{"command": group[0]["id"], "times": [], "exit_codes": [None], "error": error}]
            result["rounds"].append(results)
            for r in results:
                c = next(c for c in group if c["id"] == r["command"])
                entry = result["commands"][c["id"]]
                if r["exit_codes"] != [0]:
                    if r.get("error"):
                        entry["failed"] = f"prepare failed: {r['error'][-400:]}"
                    else:   # once more, untimed, to show why
                        sh(c["prepare"] or "true", cwd=w)
                        code, output = sh(c["run"], cwd=w)
                        entry["failed"] = f"exit {r['exit_codes'][0]}: {output[-400:]}"
                    log(f"{bench['key']} [{case['name']}] {c['id']}: FAILED, {entry['failed']}")
                    active.remove(c)
                    continue
                log(f"{bench['key']} [{case['name']}] round {round_number + 1}/{runs} {c['id']}: "
                    f"{fmt_time(r['times'][0] / result['unit_per'])}")
                if round_number == 0:
                    if c["size"]:
                        code, output = sh(c["size"], cwd=w)
                        entry["size"] = int(output) if code == 0 and output.isdigit() else None
                    if c["check"]:
                        code, output = sh(c["check"], cwd=w)
                        entry["check"], entry["check_ok"] = output[-600:] or f"exit {code}", code == 0
                        if code != 0:
                            log(f"{bench['key']} [{case['name']}] {c['id']}: check: {entry['check']}")
    sh(expand(bench.get("teardown", "true"), values), cwd=w)
    return result


# ---------------------------------------------------------------------------------- the report
def fmt_time(seconds):
    if seconds >= 100: return f"{seconds:.0f} s"
    if seconds >= 10: return f"{seconds:.1f} s"
    if seconds >= 1: return f"{seconds:.2f} s"
    if seconds >= 0.1: return f"{seconds:.3f} s"
    if seconds >= 0.01: return f"{seconds * 1e3:.1f} ms"
    if seconds >= 0.001: return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.0f} µs"


def cell_text(text):
    """One table cell / one line: a multi-line script joined with '; ' where a line ends a command."""
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    joined = "".join(line + ("" if i == len(lines) - 1 else " " if line.endswith(("&&", "||", "|", "{", "\\")) else "; ")
                     for i, line in enumerate(lines))
    return joined.replace("\\ ", "").replace("|", "\\|")


def case_times(case_result):
    """Every command's times (seconds per operation) over all rounds, from hyperfine's results."""
    times = {}
    for results in case_result["rounds"]:
        for r in results:
            if r["exit_codes"] == [0]:
                times.setdefault(r["command"], []).extend(t / case_result["unit_per"] for t in r["times"])
    return times


def render_bench(bench, record):
    lines = [f"### {bench['key']}", "", bench.get("about", "").strip(), "",
             f"Rerun: `Benchmarks/bench.py {bench['key']}`" + (f" — ran with `--runs {record['runs_option']}`" if record.get("runs_option") else ""), ""]
    commands = bench["commands"]
    cases = record["cases"]
    medians = {}
    for case in cases:
        for command_id, times in case_times(case).items():
            medians[case["case"], command_id] = statistics.median(times)

    def time_cell(case, c):
        entry = case["commands"].get(c["id"])
        if case.get("error"): return "setup FAILED"
        if entry is None: return "–"
        if entry["missing"]: return entry["missing"]
        if entry["failed"]: return f"FAILED ({entry['failed'].split(':')[0]})"
        median = medians.get((case["case"], c["id"]))
        if median is None: return "–"
        base = medians.get((case["case"], c.get("baseline", bench.get("baseline"))))
        text = fmt_time(median) + (f" ({median / base:.2f}×)" if base else "")
        return text + ("" if entry["check_ok"] else " ⚠")

    def size_cell(case, c):
        entry = case["commands"].get(c["id"]) or {}
        base = (case["commands"].get(bench.get("sizes_vs", "")) or {}).get("size")
        if entry.get("size") is None: return "–"
        return f"{entry['size']:,}" + (f" ({entry['size'] / base:.2f}×)" if base else "")

    has_sizes = any(c.get("size") for c in commands)
    has_digests = any(c.get("digests") for c in commands)
    runs = lambda case: f"{case['runs']} run" + ("s" if case["runs"] != 1 else "")
    if bench.get("transpose"):
        lines += ["| case | " + " | ".join(cell_text(c.get("label", c["id"])) for c in commands) + " |",
                  "|---|" + "---:|" * len(commands)]
        for case in cases:
            lines.append(f"| {cell_text(case['case'])} ({runs(case)}) | " + " | ".join(time_cell(case, c) for c in commands) + " |")
    else:
        header = "| tool |" + (" digests computed |" if has_digests else "")
        for case in cases:
            header += f" {cell_text(case['case'])} ({runs(case)}) |" + (f" {cell_text(case['case'])}: size (B) |" if has_sizes else "")
        lines += [header, "|---|" + ("---|" if has_digests else "") + "---|" * len(cases) * (2 if has_sizes else 1)]
        for c in commands:
            row = f"| {cell_text(c.get('label', c['id']))} |" + (f" {cell_text(c.get('digests', ''))} |" if has_digests else "")
            for case in cases:
                row += f" {time_cell(case, c)} |" + (f" {size_cell(case, c)} |" if has_sizes else "")
            lines.append(row)
    lines.append("")
    problems = [f"- {case['case']}: {cell_text(case['error'])}" for case in cases if case.get("error")]
    for case in cases:
        for c in commands:
            entry = case["commands"].get(c["id"]) or {}
            if entry.get("failed"):
                problems.append(f"- {case['case']} / {cell_text(c.get('label', c['id']))}: FAILED, `{cell_text(entry['failed'])}`")
            if not entry.get("check_ok", True):
                problems.append(f"- {case['case']} / {cell_text(c.get('label', c['id']))}: ⚠ check: `{cell_text(entry['check'])}`")
    if problems:
        lines += ["Problems:", ""] + problems + [""]
    checks = [f"| {cell_text(case['case'])} | {cell_text(c.get('label', c['id']))} | {cell_text(case['commands'][c['id']]['check'])} |"
              for case in cases for c in commands if (case["commands"].get(c["id"]) or {}).get("check")]
    if checks:
        lines += ["Checks (after the first timed run, untimed):", "", "| case | tool | check |", "|---|---|---|"] + checks + [""]
    return "\n".join(lines)


def render_commands(bench):
    lines = [f"#### {bench['key']}: commands", ""]
    for key in ("setup", "prepare", "teardown"):
        if bench.get(key):
            lines.append(f"- {key} (untimed): `{cell_text(bench[key].strip())}`")
    for name, value in bench.get("vars", {}).items():
        lines.append(f"- `{{{name}}}` = `{cell_text(value)}`")
    for c in bench["commands"]:   # with the command's own variables filled in
        own = lambda key: cell_text(expand(c.get(key, bench.get(key, "")), c.get("vars", {})))
        lines.append(f"- {cell_text(c.get('label', c['id']))}: `{own('run')}`"
                     + (f"; prepare: `{own('prepare')}`" if c.get("prepare") or (c.get("vars") and bench.get("prepare")) else ""))
    return "\n".join(lines + [""])


def render_raw(bench, record):
    lines = [f"#### {bench['key']}: raw times (in run order)", "", "| case | tool | runs | min | median | max |", "|---|---|---|---|---|---|"]
    for case in record["cases"]:
        for c in bench["commands"]:
            times = case_times(case).get(c["id"])
            if times:
                lines.append(f"| {cell_text(case['case'])} | {cell_text(c.get('label', c['id']))} | "
                             f"{' '.join(fmt_time(t) for t in times)} | {fmt_time(min(times))} | "
                             f"{fmt_time(statistics.median(times))} | {fmt_time(max(times))} |")
    return "\n".join(lines + [""])


def render(results_dir):
    spec, benches = load_benches()
    meta = json.load(open(os.path.join(results_dir, "meta.json")))
    records = [json.load(open(os.path.join(results_dir, name))) for name in sorted(os.listdir(results_dir))
               if name.endswith(".bench.json")]
    records.sort(key=lambda r: list(benches).index(r["bench"]) if r["bench"] in benches else 0)
    binary = meta["layertool"]
    out = ["# LayerKit benchmarks", "",
           f"- date: {meta['started']} – {meta.get('finished', '?')}",
           f"- load average (1/5/15 min): {meta['load_start']} at the start, {meta.get('load_end', '?')} at the end",
           f"- invocation: `{meta['invocation']}`",
           f"- machine: {meta['machine']}",
           f"- layertool: `{binary['path']}` (sha256 {binary['sha256']}, built {binary['built']}), git commit {binary['commit']}",
           f"- data: `{meta['data']}`",
           f"- scratch: {meta['scratch']['source']} ({meta['scratch']['fstype']}, journal: {meta['scratch']['journal']}), in a private mount namespace",
           f"- timing: {meta['hyperfine']}, one run per command per round, commands alternated round by round "
           "(order rotated), `--prepare` (untimed) before every run; medians; ratios are time / the named baseline's time", ""]
    suite = None
    for record in records:
        bench = benches[record["bench"]]
        if bench["suite"] != suite:
            suite = bench["suite"]
            out += [f"## {bench['suite_title']}", ""]
        out.append(render_bench(bench, record))
    out += ["## Commands", "", "Placeholders: see the head of `Benchmarks/suites.toml`; `{lt}` is the layertool under test. Shared ones:", ""]
    out += [f"- `{{{name}}}` = `{cell_text(value)}`" for name, value in spec.get("vars", {}).items()] + [""]
    out += [render_commands(benches[r["bench"]]) for r in records]
    out += ["## Raw times", ""] + [render_raw(benches[r["bench"]], r) for r in records]
    stubs = [f"- `{b['key']}`: {b.get('reason', '')}" for b in benches.values() if not b.get("runnable", True)]
    if stubs:
        out += ["## Not yet runnable", "", "In `suites.toml` with their commands (`Benchmarks/bench.py --list`):", ""] + stubs + [""]
    out += ["## Tool versions", ""] + [f"- {name}: {version}" for name, version in meta["versions"].items()] + [""]
    text = "\n".join(out)
    with open(os.path.join(results_dir, "REPORT.md"), "w") as f:
        f.write(text)
    return text


# ---------------------------------------------------------------------------------- main
def write_meta(results, meta):
    with open(os.path.join(results, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)


def list_benches(benches, spec):
    for bench in benches.values():
        state = "" if bench.get("runnable", True) else f"  NOT YET RUNNABLE: {bench.get('reason', '')}"
        print(f"{bench['key']}: cases {', '.join(c['name'] for c in bench['cases'])}{state}")
        print("  " + render_commands(bench).replace("\n", "\n  ").rstrip())


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "tool":
        return tool(sys.argv[2:])
    if len(sys.argv) > 2 and sys.argv[1] == "render":
        print(render(sys.argv[2]))
        return 0
    spec, benches = load_benches()
    settings = spec.get("settings", {})
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("benches", nargs="*", metavar="SUITE[/BENCH]", help="what to run (default: every runnable bench)")
    parser.add_argument("--list", action="store_true", help="list the benches and their commands, run nothing")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 1 run, no warm-up, each bench's quick cases")
    parser.add_argument("--runs", type=int, help="timed runs per command and case (default: the bench's)")
    parser.add_argument("--warmup", type=int, help="untimed runs per command before the first round (default: the bench's, else 0)")
    parser.add_argument("--cases", help="comma-separated case names (data sets) to run, e.g. rootfs")
    parser.add_argument("--layertool", default=os.path.join(os.path.dirname(HERE), ".build/release/layertool"))
    parser.add_argument("--data", default=os.environ.get("LKBENCH_DATA", settings.get("data")))
    parser.add_argument("--peer", help="containerd-peer (default: DATA/containerd-peer)")
    parser.add_argument("--scratch-image", default=settings.get("scratch_image"), help="journaled ext4 image, made if missing")
    parser.add_argument("--image-size", default=settings.get("image_size", "40G"))
    parser.add_argument("--scratch", help="an existing journaled mount to use instead of the image")
    parser.add_argument("--allow-unjournaled", action="store_true")
    parser.add_argument("--results", help="results dir (default: RESULTS_ROOT/<UTC date-time>)")
    args = parser.parse_args()
    if args.list:
        return list_benches(benches, spec)
    selected = [b for b in benches.values() if b.get("runnable", True) and
                (not args.benches or any(b["key"] == a or b["suite"] == a for a in args.benches))]
    if args.benches and not selected:
        die(f"no runnable bench matches {' '.join(args.benches)} (see --list)")
    if os.geteuid() != 0:
        die("needs root (loop mounts, overlay and FUSE mounts, umoci, a private mount namespace)")
    if not os.environ.get("LKBENCH_NAMESPACE"):   # every mount dies with this private namespace
        os.environ["LKBENCH_NAMESPACE"] = "1"
        os.environ["LKBENCH_INVOCATION"] = " ".join(["Benchmarks/bench.py"] + sys.argv[1:])
        os.execvp("unshare", ["unshare", "-m", "--propagation", "private", sys.executable, *sys.argv])
    for program in ("hyperfine", "tar", "gzip", "jq", "findmnt", "mkfs.ext4"):
        shutil.which(program) or die(f"{program} is required (see Benchmarks/README.md)")
    if not os.path.isfile(args.layertool):
        die(f"no layertool at {args.layertool} (swift build -c release, or --layertool)")
    if not os.path.isdir(os.path.join(args.data or "", "layers")):
        die(f"no data sets in {args.data} (run /work/shared/bench/make-fixtures.sh {args.data}, see README.md)")

    def on_signal(number, frame):
        raise SystemExit(128 + number)
    for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):   # even where a shell ignores them
        signal.signal(number, on_signal)
    scratch = Scratch(args)   # first: a refused scratch leaves nothing behind
    try:
        results = args.results or os.path.join(settings.get("results_root", "/var/tmp/lkbench/results"),
                                               datetime.datetime.now(datetime.UTC).strftime("%Y%m%d-%H%M%S"))
        os.makedirs(results, exist_ok=True)
        binary = binary_facts(os.path.realpath(args.layertool))
        copy = os.path.join(results, f"layertool-{binary['sha256']}")   # what runs: a rebuild changes nothing
        shutil.copy2(args.layertool, copy)
        meta = {"started": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
                "load_start": " ".join(open("/proc/loadavg").read().split()[:3]), "invocation": os.environ["LKBENCH_INVOCATION"],
                "machine": f"{os.cpu_count()} cores, Linux {os.uname().release}", "layertool": dict(binary, path=copy),
                "data": os.path.realpath(args.data), "hyperfine": sh("hyperfine --version")[1],
                "versions": {name: (sh(command)[1] or "not installed").splitlines()[0]
                             for name, command in spec.get("versions", {}).items()}}
        meta["scratch"] = scratch.state
        write_meta(results, meta)   # so that `render` works on what an interrupted run saved
        with socket.socket() as probe:   # a free port on 127.0.0.1 for a bench that serves something
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        base = {"lt": copy, "port": port, "data": meta["data"], "peer": args.peer or os.path.join(meta["data"], "containerd-peer"),
                "tool": f"{sys.executable} {os.path.abspath(__file__)} tool", **spec.get("vars", {})}
        for bench in selected:
            cases = bench["cases"]
            if args.quick and not args.cases:
                quick = bench.get("quick", [cases[0]["name"]])
                cases = [c for c in cases if c["name"] in quick] or [{"name": n, "set": n} for n in quick]
            if args.cases:
                wanted = args.cases.split(",")
                cases = [c for c in cases if c["name"] in wanted or c.get("set") in wanted]
            if not cases:
                log(f"{bench['key']}: none of its cases is in --cases, skipped")
                continue
            w = os.path.join(scratch.work, bench["key"].replace("/", "-"))
            os.makedirs(w)
            record = {"bench": bench["key"], "runs_option": args.runs or (1 if args.quick else None), "cases": []}
            for case in cases:
                runs = args.runs or (1 if args.quick else runs_for(bench, case))
                warmup = args.warmup if args.warmup is not None else (0 if args.quick else bench.get("warmup", 0))
                log(f"{bench['key']} [{case['name']}]: {runs} run(s) of {len(bench['commands'])} commands")
                record["cases"].append(run_case(bench, case, dict(base, w=w, out=os.path.join(w, "out")), warmup, runs))
            with open(os.path.join(results, bench["key"].replace("/", ".") + ".bench.json"), "w") as f:
                json.dump(record, f, indent=1)
            unmount_under(w)
            shutil.rmtree(w, ignore_errors=True)
    finally:
        scratch.close()
    meta["finished"] = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    meta["load_end"] = " ".join(open("/proc/loadavg").read().split()[:3])
    write_meta(results, meta)
    print(render(results))
    log(f"report: {results}/REPORT.md")
    return 0


# ---------------------------------------------------------------------------------- helpers ({tool})
def regular_files(root):
    """'./path' of every regular file under root, sorted bytewise (find . -type f | LC_ALL=C sort)."""
    found, stack = [], [b"."]
    while stack:
        rel = stack.pop()
        with os.scandir(os.path.join(os.fsencode(root), rel)) as entries:
            for e in entries:
                path = rel + b"/" + e.name
                if e.is_dir(follow_symlinks=False):
                    stack.append(path)
                elif e.is_file(follow_symlinks=False):
                    found.append(path)
    return sorted(found)


def tool_mutate(root):
    """The 5% change: file i (from 1) appended to when i % 20 == 0, deleted when i % 40 == 10, a new
    sibling when i % 200 == 100; a new dir of 10 files at the top."""
    files, rootb = regular_files(root), os.fsencode(root)
    modified = added = 0
    for i, rel in enumerate(files, start=1):
        path = os.path.join(rootb, rel)
        if i % 20 == 0:
            with open(path, "ab") as f:
                f.write(b"lkbench change %d\n" % i)
            modified += 1
        if i % 200 == 100:
            with open(os.path.join(os.path.dirname(path), b"lkbench-new-%d.txt" % i), "wb") as f:
                f.write(b"".join(b"lkbench new file %d line %02d\n" % (i, n) for n in range(1, 41)))
            added += 1
    deleted = [os.path.join(rootb, rel) for i, rel in enumerate(files, start=1) if i % 40 == 10]
    for path in deleted:
        os.unlink(path)
    os.mkdir(os.path.join(root, "lkbench-new-dir"))
    for j in range(1, 11):
        with open(os.path.join(root, "lkbench-new-dir", f"f{j}.txt"), "wb") as f:
            f.write(b"".join(b"lkbench new dir file %d line %02d\n" % (j, n) for n in range(1, 41)))
    print(f"{modified} of {len(files)} files modified, {len(deleted)} deleted, {added + 10} added")


def tool_gen_image(count, layout):
    """An OCI layout (tag latest) of count gzip layers; layer i holds layers/<i>.txt and top.txt."""
    count = int(count)
    blobs = os.path.join(layout, "blobs", "sha256")
    os.makedirs(blobs)

    def put(data):
        digest = hashlib.sha256(data).hexdigest()
        with open(os.path.join(blobs, digest), "wb") as f:
            f.write(data)
        return {"digest": "sha256:" + digest, "size": len(data)}

    layers, diff_ids = [], []
    for i in range(1, count + 1):
        tar_bytes = io.BytesIO()
        with tarfile.open(fileobj=tar_bytes, mode="w", format=tarfile.PAX_FORMAT) as t:
            for name, data in ((".", None), ("./layers", None), (f"./layers/{i}.txt", b"layer %d\n" % i), ("./top.txt", b"layer %d\n" % i)):
                info = tarfile.TarInfo(name)
                info.mtime, info.mode = 1700000000, 0o755 if data is None else 0o644
                info.type = tarfile.DIRTYPE if data is None else tarfile.REGTYPE
                info.size = len(data or b"")
                t.addfile(info, io.BytesIO(data) if data else None)
        diff_ids.append("sha256:" + hashlib.sha256(tar_bytes.getvalue()).hexdigest())
        layers.append(dict(put(gzip.compress(tar_bytes.getvalue(), mtime=0)), mediaType="application/vnd.oci.image.layer.v1.tar+gzip"))
    canonical = lambda o: json.dumps(o, separators=(",", ":"), sort_keys=True).encode()
    config = put(canonical({"architecture": "amd64", "os": "linux", "config": {}, "created": "2023-11-14T22:13:20Z",
                            "rootfs": {"type": "layers", "diff_ids": diff_ids}}))
    manifest = put(canonical({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                              "config": dict(config, mediaType="application/vnd.oci.image.config.v1+json"), "layers": layers}))
    with open(os.path.join(layout, "index.json"), "wb") as f:
        f.write(canonical({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                           "manifests": [dict(manifest, mediaType="application/vnd.oci.image.manifest.v1+json",
                                              annotations={"org.opencontainers.image.ref.name": "latest"})]}))
    with open(os.path.join(layout, "oci-layout"), "w") as f:
        f.write('{"imageLayoutVersion":"1.0.0"}')


def tool_store_vars(store, import_json):
    """KEY=VALUE lines for mounting an imported image without the store: lowerdir (the top layer's
    dir), klower (l/ short links, top first, relative to the store), flower (absolute), ltlower."""
    chains = [layer["chainID"].split(":")[1] for layer in json.load(open(import_json))["layers"]]
    links = [open(os.path.join(store, "layers", c, "link")).read().strip() for c in reversed(chains)]
    print(f"lowerdir={store}/layers/{chains[-1]}/diff")
    print("klower=" + ":".join(f"l/{link}" for link in links))
    print("flower=" + ":".join(f"{store}/l/{link}" for link in links))
    print("ltlower=" + " ".join(f"--lower {store}/l/{link}" for link in links))


def tool_merged_check(target, count):
    """TARGET N: the merged tree holds N files in layers/ and the top layer's top.txt; prints the fs type."""
    names = [n for n in os.listdir(os.path.join(target, "layers")) if n.endswith(".txt")]
    top = open(os.path.join(target, "top.txt")).read().strip()
    fstype = sh(f"findmnt -n -o FSTYPE --mountpoint {shlex.quote(target)}")[1] or "not a mount point"
    print(f"{fstype}: {len(names)} files in layers/, top.txt = \"{top}\"")
    return 0 if len(names) == int(count) and top == f"layer {count}" else 1


def walk_entries(root):
    """Relative path -> lstat of every entry under root (iterative)."""
    entries, stack = {}, [""]
    while stack:
        rel = stack.pop()
        for name in os.listdir(os.path.join(root, rel) if rel else root):
            path = os.path.join(rel, name)
            st = os.lstat(os.path.join(root, path))
            entries[path] = st
            if stat.S_ISDIR(st.st_mode):
                stack.append(path)
    return entries


def tool_same_tree(reference, tree):
    """Compares tree with reference entry by entry: type, mode, owner, size, mtime, link count, device
    numbers, symlink targets and contents. The root dir's mtime is reported, not counted."""
    a, b = walk_entries(reference), walk_entries(tree)
    differences = [f"only in the reference: {p}" for p in sorted(a.keys() - b.keys())]
    differences += [f"not in the reference: {p}" for p in sorted(b.keys() - a.keys())]
    for path in sorted(a.keys() & b.keys()):
        x, y = a[path], b[path]
        keys = lambda s: (s.st_mode, s.st_uid, s.st_gid, s.st_nlink, int(s.st_mtime), s.st_rdev,
                          None if stat.S_ISDIR(s.st_mode) else s.st_size)
        if keys(x) != keys(y):
            differences.append(f"{path}: (mode uid gid nlink mtime rdev size) {keys(x)} != {keys(y)}")
        elif stat.S_ISLNK(x.st_mode) and os.readlink(os.path.join(reference, path)) != os.readlink(os.path.join(tree, path)):
            differences.append(f"{path}: symlink target differs")
        elif stat.S_ISREG(x.st_mode) and not filecmp.cmp(os.path.join(reference, path), os.path.join(tree, path), shallow=False):
            differences.append(f"{path}: contents differ")
    root_note = "" if int(os.stat(reference).st_mtime) == int(os.stat(tree).st_mtime) else " (root dir mtime not restored)"
    if differences:
        print(f"{len(differences)} differences{root_note}: " + "; ".join(differences[:5]))
        return 1
    print(f"identical to GNU tar's tree, {len(a)} entries{root_note}")
    return 0


def layer_names(layer):
    names = subprocess.run(["tar", "-tf", layer], stdout=subprocess.PIPE, check=True).stdout.decode(errors="replace").split("\n")
    return {n.rstrip("/").removeprefix("./") for n in names if n.rstrip("/") not in ("", ".")}


def tool_entries(tree, layer):
    """TREE LAYER: as many entries unpacked under TREE as the layer lists."""
    count, expected = len(walk_entries(tree)), len(layer_names(layer))
    print(f"{count} entries unpacked, the layer has {expected}")
    return 0 if count == expected else 1


def sha256_of(stream):
    digest = hashlib.sha256()
    while chunk := stream.read(1 << 20):
        digest.update(chunk)
    return digest.hexdigest()


def tool_layer_check(layer, *printed):
    """The layer listed by GNU tar; its blob digest and diffID recomputed and, when the tool printed
    digests (files or words given after it), found among them."""
    listing = subprocess.run(["tar", "-tf", layer], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if listing.returncode != 0:
        print(f"GNU tar -tf FAILED: {listing.stderr.decode(errors='replace')[-200:]}")
        return 1
    head = open(layer, "rb").read(4)
    decoder = ["gzip", "-dc"] if head[:2] == b"\x1f\x8b" else ["zstd", "-dcq"] if head == b"\x28\xb5\x2f\xfd" else ["cat"]
    blob = sha256_of(open(layer, "rb"))
    with subprocess.Popen(decoder + [layer], stdout=subprocess.PIPE) as decoded:
        diff_id = sha256_of(decoded.stdout)
    text = "".join(open(p, errors="replace").read() if os.path.isfile(p) else p + " " for p in printed)
    result = f"tar -t OK, {len(listing.stdout.splitlines())} entries"
    if not printed:
        print(result)
        return 0
    ok = blob in text and diff_id in text
    print(result + (", blob digest and diffID OK" if ok else f", digests NOT printed (sha256:{blob}, diffID sha256:{diff_id})"))
    return 0 if ok else 1


def tool_oci_layer(layout, tag, what):
    """size | path | digests of the last layer of the image tagged tag."""
    blob = lambda d: os.path.join(layout, "blobs", "sha256", d.split(":")[1])
    index = json.load(open(os.path.join(layout, "index.json")))
    manifest = json.load(open(blob(next(m["digest"] for m in index["manifests"]
                                        if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag))))
    layer = manifest["layers"][-1]
    diff_id = json.load(open(blob(manifest["config"]["digest"])))["rootfs"]["diff_ids"][-1]
    print({"size": layer["size"], "path": blob(layer["digest"]), "digests": f"{layer['digest']} {diff_id}"}[what])


def tool_union_lower(root):
    """The union bench's lower layer: big1g and big100m (random), small/f0..f999 (4 KiB each),
    tree/d0..d99/f0..f999 (a few bytes each)."""
    os.makedirs(os.path.join(root, "small"))
    for name, mib in (("big1g", 1024), ("big100m", 100)):
        with open(os.path.join(root, name), "wb") as f:
            for _ in range(mib):
                f.write(os.urandom(1 << 20))
    for i in range(1000):
        with open(os.path.join(root, "small", f"f{i}"), "wb") as f:
            f.write(b"x" * 4096)
    for d in range(100):
        os.makedirs(os.path.join(root, "tree", f"d{d}"))
        for i in range(1000):
            with open(os.path.join(root, "tree", f"d{d}", f"f{i}"), "w") as f:
                f.write(f"{d}/{i}\n")


TOOLS = {"mutate": tool_mutate, "gen-image": tool_gen_image, "store-vars": tool_store_vars,
         "merged-check": tool_merged_check, "same-tree": tool_same_tree, "entries": tool_entries,
         "layer-check": tool_layer_check, "oci-layer": tool_oci_layer, "union-lower": tool_union_lower}


def tool(argv):
    if not argv or argv[0] not in TOOLS:
        print("bench.py tool NAME ARGS...\n" + "\n".join(f"  {n}: {(f.__doc__ or '').split(chr(10))[0]}" for n, f in TOOLS.items()))
        return 2
    return TOOLS[argv[0]](*argv[1:]) or 0


if __name__ == "__main__":
    sys.exit(main())
