from typing import Any

VERSION: int
SOURCE: str
INTS: tuple[str, ...]
CODES: tuple[str, ...]

class Scanner:
    """Reads the task lines of a layout 2 checkpoint file into columns."""

    def __init__(self) -> None: ...
    def feed(self, data: bytes | bytearray | memoryview, /) -> list[bytes]: ...
    def finish(self) -> dict[str, Any]: ...
