#!/usr/bin/env python3
"""Writes a config table of src/redis_config/: every directive `CONFIG GET *` of a server lists,
with the kind of value it takes, found by asking the server itself. The engine (Redis or Valkey)
and its version come from `<server> --version`, and name the table (`REDIS_7_0_CONFIG`,
`VALKEY_8_0_CONFIG`); its `-cli` beside it (`redis-cli`, `valkey-cli`) reads `CONFIG GET *`.

Each directive is probed by starting `redis-server --<directive> <probe> --nosuchdirective x`:
the server parses its arguments in order and stops at the first it refuses, so the fatal line
names either the probed directive (with Redis's own reason: "argument must be 'yes' or 'no'",
"must be one of the following: ...", "must be between X and Y inclusive") or the trailing bogus
one (the probe value was accepted). A free-form value the parser accepted is
then started alone (`--port 0`, so the server exits right after its start-up checks): a directive
whose value is refused there instead (Valkey's `locale-collate` checks the locale only when it
applies it) takes its own syntax. No server ever stays running.

Usage:
  scripts/redis-config-table.py [redis-server] > src/redis_config/table.rs
  scripts/redis-config-table.py ../shared/bin/valkey-server > src/redis_config/valkey_table.rs
"""
import os
import re
import subprocess
import sys
import tempfile

SERVER = sys.argv[1] if len(sys.argv) > 1 else "redis-server"
if os.sep in SERVER:
    # The probes run in the temp dir: a relative path must not depend on it.
    SERVER = os.path.abspath(SERVER)


def probe(directive, value):
    """None when the server accepted `value`, else the reason it gave."""
    out = subprocess.run(
        [SERVER, "--port", "0", "--save", "", "--" + directive, value, "--nosuchdirective", "x"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=10,
        cwd=tempfile.gettempdir(),
    ).stdout
    lines = out.splitlines()
    for i, line in enumerate(lines):
        if line.startswith(">>> '"):
            culprit = line[5:].split(" ", 1)[0]
            reason = lines[i + 1].strip() if i + 1 < len(lines) else ""
            if culprit == "nosuchdirective":
                return None
            return reason
    raise SystemExit(f"{directive} {value!r}: no fatal line in:\n{out}")


def starts_with(directive, value):
    """Whether the server gets through its whole start-up with `value`: with `--port 0` it then
    exits with "Configured to not listen anywhere", after every config has been applied (or, given
    a listening directive such as `unixsocket`, keeps running). Runs in a temp dir of its own,
    whose files (a `logfile`) are read with its output."""
    with tempfile.TemporaryDirectory() as d:
        p = subprocess.Popen([SERVER, "--port", "0", "--save", "", "--" + directive, value],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=d)
        try:
            out = p.communicate(timeout=5)[0]
        except subprocess.TimeoutExpired:
            p.kill()
            p.communicate()
            return True
        for name in os.listdir(d):
            path = os.path.join(d, name)
            if os.path.isfile(path):
                with open(path, errors="replace") as f:
                    out += f.read()
    return "Configured to not listen anywhere" in out


def all_directives():
    with tempfile.TemporaryDirectory() as d:
        sock = os.path.join(d, "s")
        p = subprocess.Popen([SERVER, "--port", "0", "--save", "", "--unixsocket", sock, "--dir", d],
                             stdout=subprocess.DEVNULL)
        try:
            for _ in range(200):
                if os.path.exists(sock):
                    break
                subprocess.run(["sleep", "0.05"])
            cli = SERVER.replace("-server", "-cli")
            out = subprocess.run([cli, "-s", sock, "--raw", "config", "get", "*"],
                                 capture_output=True, text=True, check=True).stdout.split("\n")
            return {out[i]: out[i + 1] for i in range(0, len(out) - 1, 2)}
        finally:
            p.kill()
            p.wait()


BETWEEN = re.compile(r"argument must be between (-?\d+) and (-?\d+) inclusive")


def bounds(directive, low_probe, high_probe, low_default, high_default):
    low, high = low_default, high_default
    for value in (low_probe, high_probe):
        reason = probe(directive, value)
        m = BETWEEN.search(reason or "")
        if m:
            low, high = int(m.group(1)), int(m.group(2))
    return low, high


def kind(directive):
    reason = probe(directive, "qqqq")
    if reason is None:
        return "Kind::Text" if starts_with(directive, "qqqq") else "Kind::Special"
    if reason == "argument must be 'yes' or 'no'":
        return "Kind::Bool"
    if reason.startswith("argument(s) must be one of the following: "):
        values = reason.split(": ", 1)[1].split(", ")
        return "Kind::OneOf(&[" + ", ".join(f'"{v}"' for v in values) + "])"
    if reason == "argument couldn't be parsed into an integer":
        low, high = bounds(directive, "-9223372036854775807", "9223372036854775807",
                           -(2**63) + 1, 2**63 - 1)
        return f"Kind::Integer {{ min: {low}, max: {high} }}"
    if reason == "argument must be a memory value":
        low, high = bounds(directive, "0", "9223372036854775807", 0, 2**63 - 1)
        return f"Kind::Bytes {{ min: {low}, max: {high} }}"
    if reason == "argument must be a memory or percent value":
        return "Kind::BytesOrPercent"
    return "Kind::Special"


def engine_and_version(banner):
    """("Redis", "7_0") from "Redis server v=7.0.15 ...", ("Valkey", "8_0") from "Valkey server v=8.0.1 ..."."""
    m = re.match(r"(Redis|Valkey) server v=(\d+)\.(\d+)\.", banner)
    if not m:
        raise SystemExit(f"{SERVER} --version: not a Redis or Valkey server: {banner!r}")
    return m.group(1), f"{m.group(2)}_{m.group(3)}"


def main():
    version = subprocess.run([SERVER, "--version"], capture_output=True, text=True).stdout.strip()
    engine, major_minor = engine_and_version(version)
    directives = all_directives()
    print(f"//! The config table of {engine} {major_minor.replace('_', '.')}, generated by scripts/redis-config-table.py from:")
    print(f"//! {version}")
    print("//! Do not edit: regenerate, and review the diff.")
    print()
    print("use super::kind::Kind;")
    print()
    print("/// Every directive `CONFIG GET *` lists, sorted (byte order), with the value it takes.")
    print(f"pub const {engine.upper()}_{major_minor}_CONFIG: &[(&str, Kind)] = &[")
    for name in sorted(directives):
        print(f'    ("{name}", {kind(name)}),')
    print("];")


main()
