"""The rounding totals the hedge worker keeps per wallet and asset: transactions that book on
the same wallets, in any order of their answers, add up and never deadlock on the totals."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import asyncpg

from ledger.rounding import PendingRounding, rounding_totals

LP_A, LP_B = "exchange:aaaa", "exchange:bbbb"


async def test_totals_add_up_across_transactions_and_zeros_write_nothing(
    pool: asyncpg.Pool,
) -> None:
    first = PendingRounding()
    first.add(LP_A, {"USDT": Decimal("-0.00000039"), "BTC": Decimal("-0.00000000678")})
    first.add(LP_A, {"USDT": Decimal("-0.00000061")})
    first.add(LP_B, {"ETH": Decimal(0)})
    second = PendingRounding()
    second.add(LP_A, {"USDT": Decimal("-0.000000005")})
    async with pool.acquire() as conn:
        for pending in (first, second):
            async with conn.transaction():
                await pending.write(conn)
        assert await rounding_totals(conn, LP_A) == {"USDT": Decimal("-0.000001005"),
                                                     "BTC": Decimal("-0.00000000678")}
        assert await rounding_totals(conn, LP_B) == {}
        await first.write(conn)  # written once: emptied by its write
        assert (await rounding_totals(conn, LP_A))["USDT"] == Decimal("-0.000001005")


async def test_totals_are_taken_in_address_order_whatever_order_the_answers_came_in(
    pool: asyncpg.Pool,
) -> None:
    # A transaction that answered LP B's leg before LP A's, while another holds LP A's row:
    # it waits on LP A's row before it takes LP B's (rows in (address, asset) order), so a
    # third one can still book on LP B. Taken in answer order, B would be held meanwhile:
    # the order two such transactions deadlock in.
    pending = PendingRounding()
    pending.add(LP_B, {"USDT": Decimal("-1")})
    pending.add(LP_A, {"USDT": Decimal("-2")})
    async with pool.acquire() as holder, pool.acquire() as writer, \
            pool.acquire() as third:
        holding = holder.transaction()
        await holding.start()
        await _upsert(holder, LP_A, Decimal("-4"))
        waiting = asyncio.create_task(_write_in_transaction(writer, pending))
        await asyncio.sleep(0.2)
        assert not waiting.done()  # waiting on LP A's row
        async with third.transaction():
            await third.execute("SET LOCAL lock_timeout = '2s'")
            await _upsert(third, LP_B, Decimal("-8"))  # LP B's row is not held
        await holding.commit()
        await asyncio.wait_for(waiting, 5)
        assert await rounding_totals(holder, LP_A) == {"USDT": Decimal("-6")}
        assert await rounding_totals(holder, LP_B) == {"USDT": Decimal("-9")}


async def _upsert(conn: asyncpg.Connection, address: str, amount: Decimal) -> None:
    other = PendingRounding()
    other.add(address, {"USDT": amount})
    await other.write(conn)


async def _write_in_transaction(conn: asyncpg.Connection, pending: PendingRounding) -> None:
    async with conn.transaction():
        await pending.write(conn)
