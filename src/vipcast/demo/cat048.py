"""ASTERIX CAT048 (monoradar target reports), encoded and decoded with libasterix.

One :class:`Report` is one I048 record. The items the demo uses:

====== ===================================== =======================================
item   meaning                               here
====== ===================================== =======================================
010    data source identifier                SAC/SIC of the radar
140    time of day                           1/128 s since midnight UTC (raw kept)
020    target report descriptor              TYP 5: single Mode S roll-call
040    measured position, polar              RHO (NM, 1/256), THETA (deg, 360/2^16)
070    Mode-3/A code                         octal squawk, e.g. "4521"
090    flight level                          1/4 FL
220    aircraft address                      24-bit ICAO address
240    aircraft identification               callsign, 8 ICAO characters
161    track number                          12 bits
200    calculated track velocity, polar      GSP (NM/s, 2^-14), HDG (deg)
170    track status                          CNF 0 (confirmed), RAD 2 (SSR/Mode S track)
====== ===================================== =======================================

The edition is pinned (:data:`CAT048`): sender and receivers must agree on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from asterix.base import Bits, RawDatablock
from asterix.generated import Cat_048_1_32

CAT048: TypeAlias = Cat_048_1_32  # edition 1.32
Record048: TypeAlias = Cat_048_1_32.cv_record
TOD_UNITS = 128  # I048/140 LSB: 1/128 s
DAY = 86400
TYP_MODE_S_ROLL_CALL = 5
RAD_SSR_MODE_S = 2


@dataclass(frozen=True, slots=True)
class Report:
    """One target report, in physical units (values are rounded to the item's LSB)."""

    sac: int
    sic: int
    tod_raw: int  # I048/140, 1/128 s since midnight UTC
    rho_nm: float
    theta_deg: float
    mode3a: str  # four octal digits
    flight_level: float
    address: int  # 24-bit ICAO aircraft address
    callsign: str
    track_number: int
    speed_nm_s: float  # ground speed
    heading_deg: float

    @property
    def time_of_day(self) -> float:
        return self.tod_raw / TOD_UNITS


class DecodeError(ValueError):
    """A datagram that is not valid CAT048 for the pinned edition."""


def tod_raw(wall: float) -> int:
    """I048/140 raw value for a wall-clock time (seconds since 1970, UTC)."""
    return int((wall % DAY) * TOD_UNITS) % (1 << 24)


def _angle_raw(degrees: float) -> int:
    return round((degrees % 360.0) / 360.0 * 65536) % 65536


def _record(r: Report) -> Record048:
    return CAT048.cv_record.create(
        {
            "010": (("SAC", r.sac), ("SIC", r.sic)),
            "140": r.tod_raw,
            "020": ((("TYP", TYP_MODE_S_ROLL_CALL), 0, 0, 0, 0, None),),
            "040": (("RHO", (min(r.rho_nm, 255.99), "NM")), ("THETA", _angle_raw(r.theta_deg))),
            "070": (0, 0, 0, 0, ("MODE3A", r.mode3a)),
            "090": (0, 0, ("FL", (r.flight_level, "FL"))),
            "220": r.address,
            "240": r.callsign,
            "161": (0, ("TRN", r.track_number & 0xFFF)),
            "200": (("GSP", (r.speed_nm_s, "NM/s")), ("HDG", _angle_raw(r.heading_deg))),
            "170": ((0, ("RAD", RAD_SSR_MODE_S), 0, 0, 0, None),),
        }
    )


def encode(reports: list[Report]) -> bytes:
    """One CAT048 data block holding ``reports``, as bytes for one datagram."""
    records = [_record(r) for r in reports]
    return CAT048.create(records).unparse().to_bytes()


def decode(datagram: bytes) -> list[Report]:
    """Every CAT048 record of every data block in ``datagram``; other categories are skipped.

    Raises :class:`DecodeError` for bytes that are not valid ASTERIX.
    """
    blocks = RawDatablock.parse(Bits.from_bytes(datagram))
    if isinstance(blocks, ValueError):
        raise DecodeError(f"not ASTERIX: {blocks}")
    reports: list[Report] = []
    for block in blocks:
        if block.get_category() != 48:
            continue
        records = CAT048.cv_uap.parse(block.get_raw_records())
        if isinstance(records, ValueError):
            raise DecodeError(f"bad CAT048 records: {records}")
        reports += [_report(rec) for rec in records]
    return reports


def _report(rec: Record048) -> Report:
    i010, i140, i040 = rec.get_item("010"), rec.get_item("140"), rec.get_item("040")
    i070, i090, i220 = rec.get_item("070"), rec.get_item("090"), rec.get_item("220")
    i240, i161, i200 = rec.get_item("240"), rec.get_item("161"), rec.get_item("200")
    if i010 is None or i140 is None or i040 is None or i220 is None:
        raise DecodeError("a CAT048 record without I048/010, /140, /040 or /220")
    position, velocity = i040.variation, None if i200 is None else i200.variation
    return Report(
        sac=i010.variation.get_item("SAC").as_uint(),
        sic=i010.variation.get_item("SIC").as_uint(),
        tod_raw=i140.as_uint(),
        rho_nm=position.get_item("RHO").variation.content.as_quantity("NM"),
        theta_deg=position.get_item("THETA").variation.content.as_quantity("°"),
        mode3a=""
        if i070 is None
        else i070.variation.get_item("MODE3A").variation.content.as_string(),
        flight_level=0.0
        if i090 is None
        else i090.variation.get_item("FL").variation.content.as_quantity("FL"),
        address=i220.as_uint(),
        callsign="" if i240 is None else i240.variation.content.as_string().strip(),
        track_number=0 if i161 is None else i161.variation.get_item("TRN").as_uint(),
        speed_nm_s=0.0
        if velocity is None
        else velocity.get_item("GSP").variation.content.as_quantity("NM/s"),
        heading_deg=0.0
        if velocity is None
        else velocity.get_item("HDG").variation.content.as_quantity("°"),
    )
