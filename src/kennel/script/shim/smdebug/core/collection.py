"""``from smdebug.core.collection import CollectionKeys``."""

from kennel.script.hook.names import Collection, CollectionKeys

__all__ = ["Collection", "CollectionKeys"]
