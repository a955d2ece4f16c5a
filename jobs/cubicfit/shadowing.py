"""Detect local files that shadow a dependency, before anything imports it.

A `torch.py` in the working folder makes `import torch` load that file, which
then fails deep inside a run with a circular-import traceback. This check runs
first and names the file instead. It uses `importlib.util.find_spec`, which
locates a top-level module without executing it.
"""

import importlib.util
import os

# Each of these is a package (a folder with __init__.py) when properly installed.
PACKAGES = ("numpy", "torch", "yaml", "boto3", "botocore", "matplotlib")


def find_shadowing_files(packages=PACKAGES) -> list[tuple[str, str]]:
    """Return (package, path) for every dependency that resolves to a plain module file."""
    found = []
    for name in packages:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            continue
        if spec is None or spec.origin is None:
            continue
        if spec.submodule_search_locations is None:
            found.append((name, os.path.abspath(spec.origin)))
    return found


def shadowing_message(found: list[tuple[str, str]]) -> str:
    lines = [
        f"{path} shadows the installed '{name}' package, so 'import {name}' would load "
        f"that file instead; rename or remove it (and its __pycache__), or run from another folder"
        for name, path in found
    ]
    return "\n".join(lines)
