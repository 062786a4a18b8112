"""The model an endpoint serves, and the switch to another with no request lost.

A :class:`Loaded` is one :class:`~kennel.serve.served.ServedModel` with what it needs of its own (kennel's
artifact: its batcher, so a batch never mixes two models' inputs). :class:`ModelSlot` holds the current one. A
request takes the current model for its whole life (``async with slot.use() as loaded``).
:meth:`ModelSlot.switch` loads and starts the next model beside the current one, then makes it current in one
assignment; the old one stops once every request that took it has its answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kennel.model_registry import is_registry_uri, record_deployment, resolve
from kennel.serve.limits import Unavailable

if TYPE_CHECKING:
    from kennel.serve.served import ServedModel

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Source:
    """Where a model comes from: its folder, and for a registered model its name, version and alias."""

    folder: Path
    name: str
    version: str | None = None
    alias: str | None = None
    uri: str | None = None  # models:/NAME@ALIAS or models:/NAME/VERSION

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "alias": self.alias}


def model_name(folder: Path | str) -> str:
    """The name of a model folder: its job's for a job's ``model/`` folder, else the folder's own."""
    folder = Path(folder).resolve()
    return folder.parent.name if folder.name == "model" and folder.parent.name else folder.name


def resolve_source(ref: str | Path, name: str = "") -> Source:
    """A model folder, or a registry URI (``models:/NAME@ALIAS``, ``models:/NAME/VERSION``) resolved to the
    version it names now and that version's downloaded folder."""
    if is_registry_uri(str(ref)):
        found = resolve(str(ref))
        return Source(found.folder, name or found.name, str(found.version), found.alias, str(ref))
    return Source(Path(ref), name or model_name(ref))


class Loaded:
    """One model being served: the model, where it came from, and the requests using it."""

    def __init__(self, model: ServedModel, source: Source) -> None:
        self.model, self.source = model, source
        # What a captured request was answered by: the monitor tells another model's captures apart by these.
        self.served = {**source.describe(), **model.identity()}
        self.users = 0
        self.idle = asyncio.Event()
        self.idle.set()


class ModelSlot:
    """The current :class:`Loaded` model."""

    def __init__(self) -> None:
        self.current: Loaded | None = None
        self.error: str | None = None  # why the first model could not load
        self.ready = asyncio.Event()  # a model serves
        self._settled = asyncio.Event()  # the first load is over, served or failed
        self._switching = asyncio.Lock()
        self._retiring: set[asyncio.Task[None]] = set()

    @contextlib.asynccontextmanager
    async def use(self) -> AsyncIterator[Loaded]:
        """The current model, kept for the caller until the block ends; waits while the first model loads."""
        if self.current is None and self.error is not None:
            raise Unavailable("unavailable", self.error, retry_after_s=30)
        await self._settled.wait()
        loaded = self.current
        if loaded is None:  # the first load failed while this request waited for it
            raise Unavailable("unavailable", self.error or "the model failed to load", retry_after_s=30)
        loaded.users += 1
        loaded.idle.clear()
        try:
            yield loaded
        finally:
            loaded.users -= 1
            if loaded.users == 0:
                loaded.idle.set()

    async def switch(self, load: Callable[[], Awaitable[tuple[ServedModel, Source]]]) -> Loaded:
        """Load the next model with ``load``, start it beside the current one, then serve it. If it fails, the
        current model goes on serving and the error is raised."""
        async with self._switching:
            model, source = await load()
            await model.start()
            old, self.current = self.current, Loaded(model, source)
            self.error = None
            self.ready.set()
            self._settled.set()
            if old is not None:
                task = asyncio.get_running_loop().create_task(self._retire(old), name="kennel-retire-model")
                self._retiring.add(task)
                task.add_done_callback(self._retiring.discard)
            return self.current

    def failed(self, error: str) -> None:
        """The first model could not load: say why to every request, those waiting included."""
        self.error = error
        self._settled.set()

    async def _retire(self, old: Loaded) -> None:
        await old.idle.wait()  # every request that took the old model has its answer
        await old.model.stop()
        version = f" version {old.source.version}" if old.source.version else ""
        log.info("stopped serving the previous %s%s (its requests all answered)", old.source.name, version)

    async def close(self) -> None:
        """Finish what is queued for the current model and for any being retired, then stop."""
        if self._retiring:
            await asyncio.gather(*self._retiring, return_exceptions=True)
        if self.current is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self.current.model.stop()


def note_deployment(source: Source, previous: Source | None) -> None:
    """A line in the registered model's deployment history (``kennel models history NAME``)."""
    if previous is None:
        record_deployment(source.name, source.version, source.alias, "serve")
    else:
        record_deployment(source.name, source.version, source.alias, "switch", f"was version {previous.version}")
