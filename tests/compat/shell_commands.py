"""Executable tasks written for the older AsyncFlow's shell: a command string
runs through /bin/sh as written."""

import asyncio
import os

from asyncflow import WorkflowEngine


async def main():
    flow = await WorkflowEngine.create()

    @flow.executable_task
    async def started():
        return '/bin/echo "started" && /bin/echo "second command"'

    @flow.executable_task
    async def home():
        return "echo $HOME"

    @flow.executable_task
    async def redirect():
        return "echo saved > out.txt"

    @flow.executable_task
    async def show(path):
        return f"cat {path}"

    print(f"started: {(await started()).splitlines()}")
    print(f"home is HOME: {(await home()).strip() == os.environ['HOME']}")
    await redirect()
    print(f"out.txt: {(await show('out.txt')).strip()}")
    await flow.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
