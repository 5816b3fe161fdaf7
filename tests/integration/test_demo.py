"""`vipcast demo` end to end: it runs, shows the failover and the handover, and cleans up."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from vipcast.lab import netns

pytestmark = pytest.mark.root

ROOT = Path(__file__).parents[2]


def test_the_demo_measures_a_failover_and_a_handover_and_leaves_nothing_behind() -> None:
    before = set(netns.names("vipcast-"))
    proc = subprocess.run(
        [sys.executable, "-m", "vipcast", "demo", "--duration", "20"],
        capture_output=True,
        text=True,
        timeout=90,
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        check=False,
    )
    out = proc.stdout
    assert proc.returncode == 0, f"exit {proc.returncode}\n{out}\n{proc.stderr}"
    assert "Timeline" in out
    # the live view was there (one line a second, stdout being a pipe)
    assert re.search(r"^\+\s*\d+\.\ds sent \d+ \| node1 MASTER", out, re.MULTILINE), out
    for event in ("FAIL THE MASTER", "link restored", "PLANNED HANDOVER", "traffic stops"):
        assert event in out, event
    assert re.search(r"BACKUP -> MASTER", out)
    failover = re.search(
        r"^failover: outage (\d+) ms at (node\d)'s app, ([\d,]+) reports lost", out, re.M
    )
    assert failover, out
    assert 0 < int(failover.group(1)) < 5000
    handover = re.search(
        r"^handover: .*outage (\d+) ms \(worst node\), ([\d,]+) reports lost", out, re.M
    )
    assert handover, out
    assert int(handover.group(1)) < 5000
    decoded = dict(re.findall(r"(node\d) decoded ([\d,]+) of [\d,]+ reports", out))
    assert set(decoded) == {"node1", "node2"}, out
    assert all(int(n.replace(",", "")) > 1000 for n in decoded.values()), decoded
    assert "Sessions seen" in out
    # both nodes signed and verified with the demo's keys, and refused nothing: the apps'
    # reports above came through keyed envelopes, the election through signed adverts
    keyed = re.findall(
        r"^  (node\d): adverts key 1 \(enforce\), 0 refused; envelopes key 1, 0 refused; "
        r"NACKs 0 refused$",
        out,
        re.M,
    )
    assert sorted(keyed) == ["node1", "node2"], out
    sessions = re.findall(r"^  0x[0-9a-f]+  relayed by node\d", out, re.M)
    assert len(sessions) >= 3, out  # a new session at each takeover
    # nothing of the demo's is left; other runs may make namespaces meanwhile, so look
    # for the demo's own prefix (vipcast-<its pid>-), and at what was there before
    prefix = re.search(r"namespaces \((vipcast-\d+-)\d+-\*\)", out)
    assert prefix, out
    left = set(netns.names("vipcast-")) - before
    assert not {n for n in left if n.startswith(prefix.group(1))}, left


@pytest.mark.parametrize("how", ["Ctrl-C", "SIGTERM"])
def test_an_interrupted_demo_removes_everything(how: str) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "vipcast", "demo", "--duration", "20"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        start_new_session=True,  # its own process group, as a terminal would make
    )
    try:
        assert proc.stdout is not None
        seen = []
        for line in proc.stdout:  # bounded: the demo ends by itself within ~40 s
            seen.append(line)
            if line.startswith("+"):  # the live view: traffic is flowing
                break
        prefix = re.search(r"namespaces \((vipcast-\d+-)\d+-\*\)", "".join(seen))
        assert prefix, seen
        assert netns.names(prefix.group(1))
        if how == "Ctrl-C":  # the terminal signals the whole foreground group
            os.killpg(proc.pid, signal.SIGINT)
        else:
            proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, err
    assert "interrupted" in err
    assert netns.names(prefix.group(1)) == []
