"""Reads of quoting facts are shared by the requests that need the same facts at once, but a
request only takes a read that began after it came (a refusal stands on facts read since), and,
after a write refused facts of some epoch, only a read that saw a later one."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from dealer.errors import ApiError, Errors
from dealer.services.quoting import Quoter, _Client, _Facts, _Rules
from dealer.services.rfq import QuoteCommand

CMD = QuoteCommand(uuid.uuid4(), uuid.uuid4(), "BTC/USDT", "BUY", None, None)


class _Dealer:
    """What `_load` reads of a dealer's facts: its epoch."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch


class ReadsByHand(Quoter):
    """A quoter whose database reads are released by the test, each answering the epoch (or
    raising the error) the test gives."""

    def __init__(self) -> None:
        super().__init__(pool=None, market_data=None, writer=None)  # type: ignore[arg-type]
        self.pending: list[asyncio.Future[int]] = []

    async def _read(self, cmd: QuoteCommand) -> _Facts:
        answer: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.pending.append(answer)
        epoch = await answer
        dealer: Any = _Dealer(epoch)
        return _Facts(dealer, _Client("CLIENT", "ACTIVE", epoch), _Rules((), epoch), fresh=True)


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_requests_that_came_before_a_read_began_share_it() -> None:
    quoter = ReadsByHand()
    since = quoter.reads_started
    waiting = [asyncio.create_task(quoter._load(CMD, since, None)) for _ in range(5)]
    await _settle()
    assert quoter.reads_started == 1
    quoter.pending[0].set_result(7)
    facts = await asyncio.gather(*waiting)
    assert {f.dealer.epoch for f in facts} == {7}
    assert quoter._reads == {}


async def test_a_request_that_came_during_a_read_waits_for_one_of_its_own() -> None:
    quoter = ReadsByHand()
    first = asyncio.create_task(quoter._load(CMD, quoter.reads_started, None))
    await _settle()
    later = asyncio.create_task(quoter._load(CMD, quoter.reads_started, None))  # came now
    await _settle()
    assert quoter.reads_started == 2
    quoter.pending[0].set_result(7)
    quoter.pending[1].set_result(8)
    assert (await first).dealer.epoch == 7
    assert (await later).dealer.epoch == 8


async def test_after_a_refused_write_a_read_of_the_refused_epoch_is_not_enough() -> None:
    quoter = ReadsByHand()
    since = quoter.reads_started
    loading = asyncio.create_task(quoter._load(CMD, since, stale=7))
    await _settle()
    quoter.pending[0].set_result(7)  # began before the change that refused the quote
    await _settle()
    assert quoter.reads_started == 2
    quoter.pending[1].set_result(8)
    assert (await loading).dealer.epoch == 8


async def test_a_failed_read_fails_every_request_sharing_it() -> None:
    quoter = ReadsByHand()
    since = quoter.reads_started
    waiting = [asyncio.create_task(quoter._load(CMD, since, None)) for _ in range(3)]
    await _settle()
    quoter.pending[0].set_exception(ApiError(Errors.DEALER_NOT_FOUND))
    for task in waiting:
        with pytest.raises(ApiError) as refused:
            await task
        assert refused.value.error is Errors.DEALER_NOT_FOUND
    assert quoter._reads == {}


async def test_a_request_that_stops_waiting_leaves_the_read_to_the_others() -> None:
    quoter = ReadsByHand()
    since = quoter.reads_started
    gone = asyncio.create_task(quoter._load(CMD, since, None))
    staying = asyncio.create_task(quoter._load(CMD, since, None))
    await _settle()
    gone.cancel()
    await _settle()
    quoter.pending[0].set_result(7)
    assert (await staying).dealer.epoch == 7
    assert gone.cancelled()


async def test_closing_cancels_the_reads_in_progress() -> None:
    quoter = ReadsByHand()
    waiting = asyncio.create_task(quoter._load(CMD, quoter.reads_started, None))
    await _settle()
    await quoter.close()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert quoter._reads == {}
