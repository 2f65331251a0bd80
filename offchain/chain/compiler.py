"""Compile the project's Solidity contracts through py-solc-x's Standard JSON interface.

The compiler is resolved in this order:

1. an explicit ``solc_path`` argument (the setting ``solc_path``, ``CCOMP_SOLC_PATH``);
2. a native ``solc`` installed by py-solc-x (``solcx.install_solc``; newest ≥ 0.8.24);
3. the npm solcjs stand-in ``offchain/chain/solcjs_standard_json.js`` (needs ``node`` and the
   project's ``node_modules``; see ``docs/toolchain.md``: no native solc is reachable offline).

Settings are fixed for reproducible bytecode: ``evmVersion = "cancun"`` (OpenZeppelin 5 uses
``mcopy``), optimizer on with 200 runs, remapping ``@openzeppelin/=node_modules/@openzeppelin/``,
source units named ``contracts/<relative path>`` and compiled from the project root.

Outputs are cached in ``build/contracts/<key>.json`` where the key hashes the sources, the
compiler's full version string and the settings, so a second call with unchanged inputs reads one
JSON file instead of running the compiler (solcjs takes several seconds).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from offchain.chain.errors import ChainError
from offchain.utils import read_json, write_json

__all__ = [
    "CompiledContract",
    "compile_contracts",
    "default_contracts_dir",
    "project_root",
    "resolve_solc",
]

log = logging.getLogger(__name__)

_MIN_SOLC = (0, 8, 24)
_SOLCJS_WRAPPER = Path(__file__).with_name("solcjs_standard_json.js")
_CACHE_FORMAT = 1

SETTINGS: dict[str, Any] = {
    "evmVersion": "cancun",
    "optimizer": {"enabled": True, "runs": 200},
    "remappings": ["@openzeppelin/=node_modules/@openzeppelin/"],
    "outputSelection": {"*": {"*": ["abi", "evm.bytecode.object"]}},
}
"""Standard-JSON ``settings`` used for every compilation."""


@dataclass(frozen=True)
class CompiledContract:
    """One compiled contract.

    Attributes:
        name: Contract name (``"CompensationPool"``).
        abi: The JSON ABI (list of function/event/error entries).
        bytecode: Creation bytecode, ``0x``-hex.
        source: Source unit name it was compiled from (``"contracts/CompensationPool.sol"``).
    """

    name: str
    abi: list[dict[str, Any]]
    bytecode: str
    source: str = ""


def project_root() -> Path:
    """The repository root (this file lives in ``<root>/offchain/chain/``)."""
    return Path(__file__).resolve().parents[2]


def default_contracts_dir() -> Path:
    """``<project root>/contracts``."""
    return project_root() / "contracts"


def _node_modules() -> Path:
    """The npm toolchain (solcjs, OpenZeppelin): ``<project root>/node_modules``, as the solcjs
    wrapper finds it."""
    return project_root() / "node_modules"


def resolve_solc(solc_path: str | None = None) -> tuple[str, str]:
    """Find a Standard-JSON-capable compiler executable and its version.

    Args:
        solc_path: Explicit executable (the setting ``solc_path``, ``CCOMP_SOLC_PATH``).

    Returns:
        ``(executable path, full version string such as "0.8.30+commit.73712a01")``.

    Raises:
        ChainError: no compiler found, or the chosen one does not answer ``--version``.
    """
    if solc_path:
        return solc_path, _solc_version(solc_path)

    native = _installed_native_solc()
    if native is not None:
        return native, _solc_version(native)

    if shutil.which("node") is None:
        raise ChainError(
            "no Solidity compiler: pass solc_path / set CCOMP_SOLC_PATH, install a native solc with "
            "py-solc-x, or install node (for the solcjs stand-in)"
        )
    if not (_node_modules() / "solc").is_dir():
        raise ChainError(
            f"no Solidity compiler: npm 'solc' is missing from {_node_modules()} (run `npm ci` in "
            "the project root) and no native solc is installed"
        )
    return str(_SOLCJS_WRAPPER), _solc_version(str(_SOLCJS_WRAPPER))


def _installed_native_solc() -> str | None:
    """Newest native solc ≥ 0.8.24 installed by py-solc-x, or ``None``."""
    # py-solc-x keeps binaries in $SOLCX_BINARY_PATH or ~/.solcx; asking it about a missing
    # folder would create ~/.solcx, so look first.
    folder = Path(os.environ.get("SOLCX_BINARY_PATH") or Path.home() / ".solcx")
    if not folder.is_dir():
        return None
    try:
        import solcx
        from solcx.install import get_executable

        versions = solcx.get_installed_solc_versions()
        for version in versions:  # newest first
            if version.release[:3] >= _MIN_SOLC:
                return str(get_executable(version))
    except Exception as exc:  # no solcx, unreadable ~/.solcx, ...: fall back to solcjs
        log.debug("no native solc from py-solc-x: %s", exc)
    return None


def _solc_version(executable: str) -> str:
    """The compiler's full version string, asked once per process for each build of the
    executable (its path, size and modification time; for the solcjs wrapper also npm solc's
    ``package.json``): asking the wrapper runs node, ≈ 0.4 s, and every
    :func:`compile_contracts` needs the version before it can read the compile cache.

    Raises:
        ChainError: the executable does not run or reports no version.
    """
    return _asked_version(executable, _build_stamp(executable))


def _build_stamp(executable: str) -> tuple[int, ...]:
    """What changes when the executable (or the npm solc behind the wrapper) is replaced."""
    paths = [Path(executable)]
    if Path(executable).resolve() == _SOLCJS_WRAPPER.resolve():
        paths.append(_node_modules() / "solc" / "package.json")
    stamp: list[int] = []
    for path in paths:
        try:
            stat = path.stat()
        except OSError:
            return ()  # not cached apart from other missing files: running it reports the error
        stamp += [stat.st_size, stat.st_mtime_ns]
    return tuple(stamp)


@functools.cache
def _asked_version(executable: str, stamp: tuple[int, ...]) -> str:
    try:
        from solcx.wrapper import get_version_str_from_solc_binary

        return get_version_str_from_solc_binary(executable)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise ChainError(f"solc at {executable} does not run: {exc}") from exc
    except Exception as exc:  # SolcError: no "Version: x.y.z+commit..." line
        raise ChainError(f"solc at {executable} did not report a version: {exc}") from exc


def _read_sources(contracts_dir: Path) -> dict[str, dict[str, str]]:
    files = sorted(p for p in contracts_dir.rglob("*.sol") if p.is_file())
    if not files:
        raise ChainError(f"no .sol files under {contracts_dir}")
    return {
        f"contracts/{p.relative_to(contracts_dir).as_posix()}": {"content": p.read_text()}
        for p in files
    }


def _cache_key(sources: dict[str, dict[str, str]], version: str) -> str:
    oz_pkg = _node_modules() / "@openzeppelin" / "contracts" / "package.json"
    oz_version = json.loads(oz_pkg.read_text()).get("version", "") if oz_pkg.is_file() else ""
    payload = json.dumps(
        {
            "format": _CACHE_FORMAT,
            "sources": {
                k: hashlib.sha256(v["content"].encode()).hexdigest() for k, v in sources.items()
            },
            "compiler": version,
            "settings": SETTINGS,
            "openzeppelin": oz_version,
        },
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def compile_contracts(
    contracts_dir: Path | None = None,
    solc_path: str | None = None,
    cache_dir: Path | None = None,
) -> dict[str, CompiledContract]:
    """Compile every ``*.sol`` under ``contracts_dir`` and return its contracts by name.

    Library contracts pulled in through imports (OpenZeppelin) are compiled but not returned;
    interfaces and abstract contracts (empty bytecode) are returned with ``bytecode == "0x"``.

    Args:
        contracts_dir: Directory of sources; default ``<project root>/contracts``. Imports of
            ``@openzeppelin/...`` resolve to ``<project root>/node_modules``.
        solc_path: Compiler executable (see :func:`resolve_solc` for the fallback order).
        cache_dir: Where compiled outputs are cached; default ``<project root>/build/contracts``.

    Returns:
        ``{contract name: CompiledContract}``.

    Raises:
        ChainError: no compiler, compile errors (the compiler's formatted messages are in the
            message), or two contracts with the same name.
    """
    contracts_dir = (contracts_dir or default_contracts_dir()).resolve()
    cache_dir = cache_dir or project_root() / "build" / "contracts"
    sources = _read_sources(contracts_dir)
    executable, version = resolve_solc(solc_path)
    cache_file = cache_dir / f"{_cache_key(sources, version)}.json"

    if cache_file.is_file():
        try:
            cached = read_json(cache_file)
            return {name: CompiledContract(**entry) for name, entry in cached["contracts"].items()}
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring unreadable compile cache %s: %s", cache_file, exc)

    output = _run_compiler(executable, sources)
    contracts: dict[str, CompiledContract] = {}
    for source_name in sources:
        for name, artifact in output.get("contracts", {}).get(source_name, {}).items():
            if name in contracts:
                raise ChainError(
                    f"contract name {name!r} is defined in both {contracts[name].source} and "
                    f"{source_name}"
                )
            contracts[name] = CompiledContract(
                name=name,
                abi=artifact["abi"],
                bytecode="0x" + artifact["evm"]["bytecode"]["object"],
                source=source_name,
            )
    write_json(
        cache_file,
        {
            "compiler": version,
            "settings": SETTINGS,
            "contracts": {
                name: {"name": c.name, "abi": c.abi, "bytecode": c.bytecode, "source": c.source}
                for name, c in contracts.items()
            },
        },
    )
    log.info("compiled %d contracts with solc %s -> %s", len(contracts), version, cache_file)
    return contracts


def _run_compiler(executable: str, sources: dict[str, dict[str, str]]) -> dict[str, Any]:
    import solcx
    from solcx.exceptions import SolcError

    root = project_root()
    input_json = {"language": "Solidity", "sources": sources, "settings": SETTINGS}
    try:
        output = solcx.compile_standard(
            input_json,
            base_path=str(root),
            allow_paths=[str(root), str(_node_modules())],
            solc_binary=executable,
        )
    except SolcError as exc:
        # SolcError's message is the formatted compiler errors; a crashed compiler leaves a
        # generic message and the reason on stderr.
        details = exc.message
        if exc.stderr_data and exc.stderr_data.strip() not in details:
            details = f"{details}\n{exc.stderr_data.strip()}"
        raise ChainError(f"Solidity compilation failed ({executable}):\n{details}") from exc
    except (OSError, ValueError) as exc:  # crashed binary, non-JSON output
        raise ChainError(f"Solidity compiler {executable} failed: {exc}") from exc
    return output
