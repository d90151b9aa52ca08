"""atheris (libFuzzer) target for the configuration parsers. Not a pytest module (no ``test_`` prefix).

    python tests/fuzz/fuzz_config.py -max_total_time=60

Each input is decoded as one of three sources, as a user would write them:

* one value for one setting, as a string (command line / environment) through ``Setting.convert``;
* a TOML document (``tomllib``), each known key converted from its native TOML value;
* a command line (``--flag value`` pairs) and a ``WEBCLUSTER_*`` environment through ``load_config``.

The invariant: a bad value is refused with ``InvalidValue`` / ``ConfigError`` (the one-line
``setting <name>: <problem>; <fix>`` users see), never any other exception; a refusal names a setting.
Parsers only look at the filesystem (paths must exist, users must be known), they never change it.
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root

import atheris  # noqa: E402

with atheris.instrument_imports():
    from webcluster.cluster.config import ConfigError, load_config
    from webcluster.cluster.parsers import InvalidValue
    from webcluster.cluster.settings import BY_NAME, SETTINGS

FLAGS = [s.flags[-1] for s in SETTINGS if not s.switch and s.name != "config"]


def one_value(fdp: atheris.FuzzedDataProvider) -> None:
    setting = SETTINGS[fdp.ConsumeIntInRange(0, len(SETTINGS) - 1)]
    try:
        setting.convert(fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 80)))
    except InvalidValue as exc:
        assert exc.problem and exc.fix


def toml_document(fdp: atheris.FuzzedDataProvider) -> None:
    try:
        doc = tomllib.loads(fdp.ConsumeUnicodeNoSurrogates(fdp.remaining_bytes()))
    except tomllib.TOMLDecodeError:
        return
    for key, value in doc.items():
        if key in BY_NAME:
            try:
                BY_NAME[key].convert(value)
            except InvalidValue as exc:
                assert exc.problem and exc.fix


def command_line(fdp: atheris.FuzzedDataProvider) -> None:
    argv: list[str] = []
    for _ in range(fdp.ConsumeIntInRange(0, 4)):
        argv += [
            FLAGS[fdp.ConsumeIntInRange(0, len(FLAGS) - 1)],
            fdp.ConsumeUnicodeNoSurrogates(24),
        ]
    environ = {}
    for _ in range(fdp.ConsumeIntInRange(0, 2)):
        setting = SETTINGS[fdp.ConsumeIntInRange(0, len(SETTINGS) - 1)]
        if setting.name != "config":
            environ[setting.env] = fdp.ConsumeUnicodeNoSurrogates(24).replace("\0", "")
    try:
        load_config(argv, environ)
    except ConfigError as exc:
        assert str(exc).startswith(("setting ", "command line: ")), str(exc)


SOURCES = (one_value, toml_document, command_line)


def test_one_input(data: bytes) -> None:
    """libFuzzer entry point: pick a source, feed it the rest of the input."""
    fdp = atheris.FuzzedDataProvider(data)
    SOURCES[fdp.ConsumeIntInRange(0, len(SOURCES) - 1)](fdp)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
