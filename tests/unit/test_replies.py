"""Who answers (vipcast.core.replies): the node delivering its own relay's session."""

from __future__ import annotations

import socket

from hypothesis import given
from hypothesis import strategies as st

from vipcast.api import Sender
from vipcast.core import envelope as env
from vipcast.core.replies import UNNAMED, answers, answers_request

OWN, OTHER = 0x18B_0001, 0x18B_0002


def test_the_master_answers_its_own_session() -> None:
    assert answers(holds_vips=True, delivering=OWN, own_session=OWN, leads=True)


def test_a_new_master_still_delivering_its_predecessors_session_does_not_answer() -> None:
    assert not answers(holds_vips=True, delivering=OTHER, own_session=OWN, leads=True)


def test_an_old_master_answers_its_session_to_its_end_after_hearing_the_new_one() -> None:
    assert answers(holds_vips=True, delivering=OWN, own_session=OWN, leads=False)


def test_before_any_delivery_the_election_decides() -> None:
    assert answers(holds_vips=True, delivering=None, own_session=OWN, leads=True)
    assert not answers(holds_vips=True, delivering=None, own_session=OWN, leads=False)


@given(st.one_of(st.none(), st.integers(1, 2**64 - 1)), st.integers(1, 2**64 - 1), st.booleans())
def test_without_the_vips_nobody_answers(delivering: int | None, own: int, leads: bool) -> None:
    assert not answers(holds_vips=False, delivering=delivering, own_session=own, leads=leads)


@given(st.integers(1, 2**64 - 1), st.integers(1, 2**64 - 1), st.booleans(), st.booleans())
def test_two_nodes_delivering_the_same_session_never_both_answer(
    session: int, own_a: int, leads_a: bool, leads_b: bool
) -> None:
    """Session ids differ between relays, so one delivered session has one owner."""
    own_b = own_a + 1 if own_a < 2**64 - 1 else own_a - 1
    a = answers(holds_vips=True, delivering=session, own_session=own_a, leads=leads_a)
    b = answers(holds_vips=True, delivering=session, own_session=own_b, leads=leads_b)
    assert not (a and b)


def test_a_reply_naming_its_request_leaves_from_the_relay_that_took_the_request_in() -> None:
    assert answers_request(holds_vips=True, request_session=OWN, own_session=OWN)
    assert not answers_request(holds_vips=True, request_session=OTHER, own_session=OWN)
    assert not answers_request(holds_vips=False, request_session=OWN, own_session=OWN)


def test_the_python_sender_names_the_request_it_answers() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as outbound:
        outbound.bind(("127.0.0.1", 0))
        sender = Sender(outbound.getsockname())
        sender.send(b"a", ("198.19.0.2", 4000), session=OWN, term=7)
        sender.send(b"b", ("198.19.0.2", 4000))
        sender.close()
        named, unnamed = (env.decode_message_untrusted(outbound.recv(2048)) for _ in range(2))
    assert isinstance(named, env.Data)
    assert isinstance(unnamed, env.Data)
    assert (named.session, named.term, named.datagrams[0].payload) == (OWN, 7, b"a")
    assert (unnamed.session, unnamed.term) == (UNNAMED, 0)
