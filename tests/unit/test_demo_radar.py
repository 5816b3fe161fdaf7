"""The demo's radar: CAT048 target reports survive libasterix encoding and decoding."""

from __future__ import annotations

import math

import pytest

from vipcast.demo import cat048
from vipcast.demo.radar import Radar, fleet

# the items' resolutions (LSB), from the CAT048 specification
RHO_LSB, ANGLE_LSB, FL_LSB, SPEED_LSB = 1 / 256, 360 / 65536, 1 / 4, 2**-14


def _close(a: float, b: float, lsb: float) -> bool:
    return abs(a - b) <= lsb / 2 + 1e-9


def _angle_close(a: float, b: float) -> bool:
    return abs((a - b + 180) % 360 - 180) <= ANGLE_LSB / 2 + 1e-9


def test_every_aircraft_of_the_fleet_round_trips() -> None:
    wall = 1_700_000_000.25
    sent = [plane.report(wall) for plane in fleet(16)]
    for original in sent:
        (got,) = cat048.decode(cat048.encode([original]))
        assert (got.sac, got.sic, got.tod_raw) == (original.sac, original.sic, original.tod_raw)
        assert (got.address, got.callsign, got.mode3a, got.track_number) == (
            original.address,
            original.callsign,
            original.mode3a,
            original.track_number,
        )
        assert _close(got.rho_nm, original.rho_nm, RHO_LSB)
        assert _angle_close(got.theta_deg, original.theta_deg)
        assert _close(got.flight_level, original.flight_level, FL_LSB)
        assert _close(got.speed_nm_s, original.speed_nm_s, SPEED_LSB)
        assert _angle_close(got.heading_deg, original.heading_deg)


def test_the_wire_format_is_a_cat048_data_block() -> None:
    report = fleet(1)[0].report(0.0)
    data = cat048.encode([report, report])
    assert data[0] == 48  # CAT
    assert int.from_bytes(data[1:3], "big") == len(data)  # LEN covers the whole block
    assert len(cat048.decode(data)) == 2


def test_time_of_day_is_kept_raw_in_1_128_s() -> None:
    midnight = 1_700_006_400.0  # a UTC midnight
    assert midnight % 86400 == 0
    assert cat048.tod_raw(midnight) == 0
    assert cat048.tod_raw(midnight + 3600.5) == 3600 * 128 + 64
    report = fleet(1)[0].report(midnight + 86399.99)
    (got,) = cat048.decode(cat048.encode([report]))
    assert got.tod_raw == report.tod_raw == 86399 * 128 + 126
    assert got.time_of_day == pytest.approx(86399.984375)


def test_other_categories_are_skipped_and_garbage_is_refused() -> None:
    cat034_north_marker = bytes.fromhex("220007c0010201")  # from libasterix's README
    report = fleet(1)[0].report(0.0)
    assert len(cat048.decode(cat034_north_marker + cat048.encode([report]))) == 1
    with pytest.raises(cat048.DecodeError):
        cat048.decode(b"\x30\x00\x10not asterix")


def test_aircraft_fly_plausible_tracks() -> None:
    plane = fleet(1)[0]
    before = plane.report(0.0)
    for _ in range(600):  # one minute in 0.1 s steps
        plane.advance(0.1)
    after = plane.report(60.0)
    x0 = before.rho_nm * math.sin(math.radians(before.theta_deg))
    y0 = before.rho_nm * math.cos(math.radians(before.theta_deg))
    x1 = after.rho_nm * math.sin(math.radians(after.theta_deg))
    y1 = after.rho_nm * math.cos(math.radians(after.theta_deg))
    flown = math.hypot(x1 - x0, y1 - y0)
    assert flown <= plane.speed / 60 + 0.1  # no faster than its ground speed allows
    assert flown >= plane.speed / 60 * 0.5  # and it did move
    assert 50 <= after.flight_level <= 410


def test_the_radar_paces_and_counts_what_it_sends_by_time_of_day() -> None:
    radar = Radar(fleet(4), rate=300)
    assert radar.due(1.0) == 300
    for i in range(8):
        next_one = radar.next_datagram(1_700_000_000.0 + i / 300)
        assert next_one is not None
        datagram, tod = next_one
        radar.sent += 1
        radar.sent_by_tod[tod] += 1
        (report,) = cat048.decode(datagram)
        assert report.tod_raw == tod
    assert radar.due(1.0) == 292
    assert sum(radar.sent_by_tod.values()) == 8
    status = radar.status(final=True)
    assert status["sent"] == 8
    assert isinstance(status["sent_by_tod"], dict)
    assert sum(status["sent_by_tod"].values()) == 8


def test_catching_up_never_repeats_an_aircraft_within_one_tick() -> None:
    radar = Radar(fleet(2), rate=300)
    wall = 1_700_000_000.0  # a stall is over: many reports due at once
    sent = []
    while (next_one := radar.next_datagram(wall)) is not None:
        sent.append(cat048.decode(next_one[0])[0])
        radar.sent += 1
    assert len(sent) == 2  # one per aircraft, then it waits for the next 1/128 s
    assert radar.next_datagram(wall + 1 / 128) is not None
