"""Use cases that join the layers: compare, describe, extract, import (with bulk
templates), timeline, weight drift and ``reprstore.open``. The CLI and the public API
call these; nothing below imports them."""
