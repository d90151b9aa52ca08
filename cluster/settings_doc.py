"""The README's settings section, generated from the settings table (cluster/settings.py).

``python -m webcluster.cluster.config --markdown`` prints it; ``--write-readme`` rewrites the text between the
README's settings markers in place (``tests/cluster/test_config.py`` fails while it is stale).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from webcluster.cluster.settings import SECTIONS, SETTINGS, Setting
from webcluster.cluster.settings import describe_default as _describe_default

README_START = "<!-- settings:start -->"
README_END = "<!-- settings:end -->"
_README = Path(__file__).resolve().parent.parent / "README.md"

_MD_INTRO = """\
## Settings

<!-- Generated from cluster/settings.py by `python -m webcluster.cluster.config --write-readme`; do not edit. -->

Every setting can be given on the command line, as an environment variable `WEBCLUSTER_<NAME>`, or as a
key of the TOML file named by `--config FILE` (or `WEBCLUSTER_CONFIG`); keys are the setting names below,
e.g. `threads = 8`, and an unknown key or `WEBCLUSTER_*` variable is an error. Precedence: command line >
environment > file > default. On SIGHUP the file and the environment are read again; command-line values
keep winning. An invalid value stops the server at start with `setting <name>: <problem>; <fix>`.

Value formats:
- **durations**: seconds as a number (`2.5`), or with a unit: `500ms`, `30s`, `2m`, `1h`;
- **sizes** (`BYTES`): a byte count, or with a binary suffix `k`, `m`, `g` (`64k` = 65536, `1g` = 2^30);
- **booleans**: `true/false`, `yes/no`, `on/off`, `1/0`;
- **lists** (`bind`, `static`, `forwarded_allow_ips`, `admin_allow_ips`): repeat the flag (`bind`,
  `static`) or write a comma list; comma-separated in the environment; a TOML array (`static` may also be a TOML table
  `{"/assets" = "public"}`);
- **umask**: octal, `027` or `0o027` (in TOML write the integer as `0o027`);
- **paths** are made absolute against the directory the server is started from; an empty value unsets an
  optional setting (`WEBCLUSTER_ACCESS_LOG=`).
"""


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _flag_cell(s: Setting) -> str:
    flags = [*s.flags, f"--no-{s.flags[-1][2:]}"] if s.switch else list(s.flags)
    shown = [f"`{f}`" for f in flags[:-1]] + [
        f"`{flags[-1]}{' ' + s.metavar if s.metavar else ''}`"
    ]
    return ", ".join(shown)


def render_markdown() -> str:
    """The README settings section (Markdown), one table per section, generated from the table."""
    lines = [_MD_INTRO]
    for section in SECTIONS:
        lines += [f"### {section[0].upper()}{section[1:]}", ""]
        lines += [
            "| Setting | Flag | Environment | Default | Description |",
            "|---|---|---|---|---|",
        ]
        for s in (s for s in SETTINGS if s.section == section):
            plain = s.default_doc is not None or s.default is None  # prose, not a TOML literal
            default = _describe_default(s) if plain else f"`{_describe_default(s)}`"
            row = [f"`{s.name}`", _flag_cell(s), f"`{s.env}`", default, s.help]
            lines.append("| " + " | ".join(_cell(c) for c in row) + " |")
        lines.append("")
    return "\n".join(lines)


def readme_section(text: str) -> str | None:
    """The text between the settings markers of a README (None when the markers are missing)."""
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        return None
    return text[start + len(README_START) : end].removeprefix("\n")


def write_readme(path: Path = _README) -> bool:
    """Regenerate the settings section of ``path`` in place (appending the markers at the end when
    absent); only the text between the markers changes. Returns whether the file changed."""
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    block = f"{README_START}\n{render_markdown()}{README_END}"
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        new = (text.rstrip("\n") + "\n\n" if text.strip() else "") + block + "\n"
    else:
        new = text[:start] + block + text[end + len(README_END) :]
    if new != text:
        path.write_text(new, encoding="utf-8")
    return new != text


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m webcluster.cluster.config --markdown | --write-readme [README]``."""
    parser = argparse.ArgumentParser(
        prog="python -m webcluster.cluster.config", description=__doc__.split("\n")[0]
    )
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--markdown", action="store_true", help="print the README settings table")
    action.add_argument(
        "--write-readme", nargs="?", const=str(_README), metavar="README", help="update it in place"
    )
    args = parser.parse_args(argv)
    if args.markdown:
        sys.stdout.write(render_markdown())
        return 0
    changed = write_readme(Path(args.write_readme))
    print(f"{args.write_readme}: {'updated' if changed else 'already up to date'}")
    return 0
