"""The demo's script: build the site, run traffic, fail the master, bring it back, hand over.

The phases are spread over ``duration`` seconds of traffic: steady traffic, then at
1/4 the master's switch port goes down (failover), at 1/2 it comes back (the old
master preempts: ``preempt = true`` and priority 150 > 100), at 3/4 a planned
handover is asked of whichever node is master, and at the end the radar stops.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TextIO

from vipcast.daemon import control
from vipcast.demo import cluster, report, statusfile
from vipcast.demo.cluster import DemoNode, EventFollower, wait_for
from vipcast.demo.screen import Screen
from vipcast.lab.process import NsProcess
from vipcast.lab.site import REMOTE, VIP, Lab, Site, build_site, sweep

REFRESH = 0.25  # seconds between screen updates
SETTLE = 1.5  # seconds after the radar stops before the apps are read
HANDOVER_WAIT = 10.0


def _build(lab: Lab) -> Site:
    """The standard site; PermissionError when namespaces cannot be made."""
    try:
        return build_site(lab, nodes=2)
    except Exception as e:
        code = getattr(e, "errno", None) or getattr(e, "code", None)
        if code in (errno.EPERM, errno.EACCES):
            raise PermissionError(f"cannot create network namespaces: {e}") from e
        raise


def _has_picture(node: DemoNode) -> bool:
    return node.app_picture() is not None


@dataclass
class Step:
    at: float  # seconds after the traffic started
    name: str
    action: Callable[[], None]


class Demo:
    def __init__(
        self,
        duration: float,
        rate: float,
        aircraft: int,
        out: TextIO,
        logs: Path | None = None,
    ) -> None:
        self.duration = duration
        self.logs = logs
        self.pid = os.getpid()
        self.rate = rate
        self.aircraft = aircraft
        self.screen = Screen(out)
        self.out = out
        self.lab: Lab | None = None
        self.site: Site | None = None
        self.nodes: list[DemoNode] = []
        self.follower = EventFollower()
        self.actions: list[report.Action] = []
        self.t0 = 0.0
        self.radar_status = Path()
        self.radar: NsProcess | None = None
        self._threads: list[threading.Thread] = []
        self._rates: dict[str, tuple[float, int, float]] = {}

    # --- the whole run ----------------------------------------------------------------

    def run(self) -> int:
        sweep()  # namespaces left by demos or tests that were killed
        if self.logs is not None:
            self.logs.mkdir(parents=True, exist_ok=True)
        self.lab = Lab(self.logs)
        try:
            self._setup(self.lab)
            self._play()
            return self._finish()
        finally:
            if os.getpid() == self.pid:  # never in a child forked by a library
                self._teardown()

    def _setup(self, lab: Lab) -> None:
        say = self.screen.say
        say(f"vipcast demo: building a virtual site in network namespaces ({lab.prefix}*)")
        site = self.site = _build(lab)
        say(
            f"  remote centre {REMOTE} -- router -- switch -- node1, node2; "
            f"VIP {VIP}, VRID {cluster.VRID}"
        )
        for i in (1, 2):
            node = cluster.start_node(site, i)
            self.nodes.append(node)
            self.follower.follow(node)
        say(
            f"  vipcast running on node1 (priority {cluster.PRIORITIES[0]}) and node2 "
            f"(priority {cluster.PRIORITIES[1]}), adverts every {cluster.ADVERT_INTERVAL} s"
        )
        wait_for(lambda: self.nodes[0].state() == "MASTER", 15, "node1 to become MASTER")
        wait_for(lambda: self.nodes[1].state() == "BACKUP", 15, "node2 to be BACKUP")
        bound = self.duration + 120
        for node in self.nodes:
            cluster.start_app(node, bound)
        for node in self.nodes:
            wait_for(partial(_has_picture, node), 30, f"{node.name}'s app")
        say(
            f"  a radar application on each node receives feed '{cluster.FEED_NAME}' "
            f"(VIP:{cluster.FEED_PORT}) at 127.0.0.1:{cluster.APP_PORT} and decodes CAT048"
        )
        self.radar_status = lab.workdir / "radar.json"
        self.radar = cluster.start_radar(
            site, self.radar_status, self.rate, self.duration, self.aircraft
        )
        wait_for(lambda: statusfile.read(self.radar_status) is not None, 30, "the radar")
        started = statusfile.read(self.radar_status) or {}
        self.t0 = float(started.get("started", time.time()))
        say(
            f"  radar at {REMOTE} sends {self.rate:g} ASTERIX CAT048 reports/s "
            f"({self.aircraft} aircraft) to {VIP}:{cluster.FEED_PORT} for {self.duration:g} s"
        )
        say("")
        self._note("start", f"traffic starts: {self.rate:g} CAT048 reports/s to the VIP", self.t0)

    def _play(self) -> None:
        d = self.duration
        steps = [
            Step(d / 4, "failover", self._cut),
            Step(d / 2, "return", self._restore),
            Step(3 * d / 4, "handover", self._handover),
        ]
        end = self.t0 + d
        hard_stop = end + 15  # bounded even if the radar hangs
        while (now := time.time()) < hard_stop:
            while steps and now >= self.t0 + steps[0].at:
                steps.pop(0).action()
            self._refresh(now, steps)
            if now >= end and (self.radar is None or self.radar.returncode is not None):
                break
            time.sleep(max(0.0, REFRESH - (time.time() - now)))
        for thread in self._threads:
            thread.join(timeout=HANDOVER_WAIT + 5)
        self._note("end", "traffic stops", end)

    # --- the script's actions ---------------------------------------------------------

    def _note(self, name: str, text: str, at: float | None = None) -> None:
        self.actions.append(report.Action(time.time() if at is None else at, name, text))

    def _cut(self) -> None:
        assert self.site is not None
        self._note("failover", "FAIL THE MASTER: node1's link cut (switch port p-node1 down)")
        self.site.switch.set_link("p-node1", up=False)

    def _restore(self) -> None:
        assert self.site is not None
        self._note("return", "node1's link restored (p-node1 up)")
        self.site.switch.set_link("p-node1", up=True)

    def _handover(self) -> None:
        master = next((n for n in self.nodes if n.state() == "MASTER"), None)
        if master is None:
            self._note("handover", "PLANNED HANDOVER skipped: no node is MASTER")
            return
        self._note("handover", f"PLANNED HANDOVER requested on the master, {master.name}")

        def ask() -> None:
            try:
                answer = control.request(
                    master.socket, "handover", timeout=HANDOVER_WAIT + 5, wait=HANDOVER_WAIT
                )
                text = answer.get("message") if answer.get("ok") else answer.get("error")
            except (OSError, ValueError) as e:
                text = f"no answer: {e}"
            self._note("handover-done", f"{master.name} answers: {text}")

        thread = threading.Thread(target=ask, daemon=True)
        thread.start()
        self._threads.append(thread)

    # --- the live view ----------------------------------------------------------------

    def _refresh(self, now: float, steps: list[Step]) -> None:
        radar = statusfile.read(self.radar_status) or {}
        rows = []
        for node in self.nodes:
            status = node.status() or {}
            app = node.app_picture() or {}
            rows.append(self._row(node, status, app, now))
        upcoming = f"next: {steps[0].name} at +{steps[0].at:.0f} s" if steps else "next: end"
        head = (
            f"vipcast demo  +{now - self.t0:5.1f} s of {self.duration:g} s   "
            f"radar sent {radar.get('sent', 0):,} reports   {upcoming}"
        )
        table = [
            f"{'node':<6} {'state':<7} {'VIP':<5} {'reports':>8} {'/s':>4} "
            f"{'aircraft':>8}  {'session':<14} {'seq':>7}  last decoded report",
            *rows,
        ]
        happened = [(a.time, "demo", a.text) for a in self.actions] + [
            (e.time, e.node, e.message)
            for e in self.follower.snapshot()
            if e.kind == "transition" and e.time >= self.t0
        ]
        recent = [
            f"  {report.rel(t, self.t0)}  {who:<6} {text}" for t, who, text in sorted(happened)[-6:]
        ]
        block = [head, *table, "", *recent]
        line = f"+{now - self.t0:5.1f}s sent {radar.get('sent', 0)} | " + " | ".join(rows)
        self.screen.draw(block, " ".join(line.split()))

    def _row(self, node: DemoNode, status: dict[str, Any], app: dict[str, Any], now: float) -> str:
        reports = int(app.get("reports", 0))
        last_t, last_n, last_rate = self._rates.get(node.name, (now, reports, 0.0))
        rate = last_rate
        if now - last_t >= 1.0:
            rate = (reports - last_n) / (now - last_t)
            self._rates[node.name] = (now, reports, rate)
        elif node.name not in self._rates:
            self._rates[node.name] = (now, reports, 0.0)
        held = "held" if status.get("vips_held") else "-"
        session = int(app.get("session", 0))
        return (
            f"{node.name:<6} {status.get('state', '?')!s:<7} {held:<5} {reports:>8,} "
            f"{rate:>4.0f} {int(app.get('aircraft', 0)):>8}  {report.session_name(session):<14} "
            f"{int(app.get('sequence', 0)):>7}  {app.get('latest') or ''}"
        )

    # --- the end ----------------------------------------------------------------------

    def _finish(self) -> int:
        self.screen.say("")
        if self.radar is not None:
            with contextlib.suppress(Exception):
                self.radar.wait(10)
        time.sleep(SETTLE)  # what is still in flight, or held behind a gap, arrives
        pictures: dict[str, dict[str, Any]] = {}
        for node in self.nodes:
            assert node.app is not None
            node.app.signal(signal.SIGTERM)
        for node in self.nodes:
            assert node.app is not None
            with contextlib.suppress(Exception):
                node.app.wait(15)
            pictures[node.name] = node.app_picture() or {}
        radar = statusfile.read(self.radar_status) or {}
        statuses = {node.name: node.status() or node.last_status for node in self.nodes}
        result = report.Result(
            t0=self.t0,
            duration=self.duration,
            actions=sorted(self.actions, key=lambda a: a.time),
            events=self.follower.snapshot(),
            radar=radar,
            apps=pictures,
            daemons=statuses,
            node_addresses={n.name: n.address for n in self.nodes},
        )
        self.out.write(report.render(result))
        dead = [n for n in self.nodes if n.daemon.returncode is not None]
        for node in dead:  # a daemon that died on its own: show why
            self.out.write(
                f"\n{node.name}'s vipcast exited ({node.daemon.returncode}) during the demo; "
                f"its log ends:\n{cluster.tail(node.daemon)}\n"
            )
        self.out.flush()
        return 0 if report.succeeded(result) and not dead else 1

    def _teardown(self) -> None:
        """Stop everything and remove every namespace, even on Ctrl-C (asked twice)."""
        old = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            if self.lab is None:
                return
            self.follower.close()
            # the radar and the apps at once; then Lab.close() stops the daemons one
            # by one, the last first: a master hands over before it stops
            daemons = {id(n.daemon) for n in self.nodes}
            others = [p for p in self.lab.processes if id(p) not in daemons]
            for proc in others:
                proc.signal(signal.SIGTERM)
            deadline = time.monotonic() + 5
            for proc in others:
                with contextlib.suppress(Exception):
                    proc.wait(max(0.1, deadline - time.monotonic()))
            self.lab.close()
            self.screen.say(f"torn down: namespaces {self.lab.prefix}* removed")
            if self.logs is not None:
                self.screen.say(f"configs, status files and logs kept in {self.logs}")
        finally:
            for sig, handler in old.items():
                signal.signal(sig, handler)
