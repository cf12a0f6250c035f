"""The asyncio API: ``rmq.aio.Client``, ``rmq.aio.Producer``, ``rmq.aio.Worker``.

    import asyncio, rmq.aio

    async def main():
        async with rmq.aio.Producer("redis://127.0.0.1:6379") as p:
            await p.push("orders", b'{"sku":42}', tag="created")

    asyncio.run(main())
"""
from .client import Client, Rotation, classify, lua_library
from .producer import Producer
from .worker import Outcome, Worker

__all__ = ["Client", "Producer", "Worker", "Outcome", "Rotation", "classify", "lua_library"]
