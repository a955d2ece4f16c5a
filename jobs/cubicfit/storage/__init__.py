"""Result storage: a local folder or an S3-compatible bucket behind one interface."""

from cubicfit.storage.base import ResultStore


def open_store(output: str) -> ResultStore:
    """Return the store for an `output` setting: `s3://bucket/prefix` or a local folder."""
    if output.startswith("s3://"):
        from cubicfit.storage.s3 import S3Store

        return S3Store.from_url(output)
    from cubicfit.storage.local import LocalStore

    return LocalStore(output)


__all__ = ["ResultStore", "open_store"]
