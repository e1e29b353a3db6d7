"""docs/cli.md documents every command and option of the ``edge-agent`` parser.

The rule: the parser is built as the console script builds it (``agent.cli.build_parser``) and
walked through every subcommand, sub-subcommands included (``fleet render``, ``keys generate``,
``keys show``). Each command has a ``## `` section of docs/cli.md whose heading names it (``##
build and profile`` covers ``build`` and ``profile``), a sub-subcommand's name appears in its
command's section, and every long option (``--x``) of a command that is not hidden
(``help=argparse.SUPPRESS``) appears in that section as a whole option (``--rate`` is not found
in ``--rates``). The global options (``--version``, ``--log-level``) appear before the first
section. ``--help`` is left out: every command has it.
"""

from __future__ import annotations

import argparse
import os
import re
from typing import Dict, Iterator, List, Tuple

from agent.cli import build_parser

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLI_DOC = os.path.join(REPO, "docs", "cli.md")


def sections(text: str) -> Tuple[str, Dict[str, str]]:
    """(text before the first ``## `` heading, {heading: its text up to the next ``## ``})."""
    head: List[str] = []
    out: Dict[str, List[str]] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("## "):
            current = line[3:].strip()
            out[current] = []
        elif current is None:
            head.append(line)
        else:
            out[current].append(line)
    return "\n".join(head), {k: "\n".join(v) for k, v in out.items()}


def commands(parser: argparse.ArgumentParser, path: Tuple[str, ...] = ()
             ) -> Iterator[Tuple[Tuple[str, ...], argparse.ArgumentParser]]:
    """(command path, parser) for the parser and every subcommand below it, hidden ones left out."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            hidden = {a.dest for a in action._choices_actions if a.help == argparse.SUPPRESS}
            for name, sub in action.choices.items():
                if name not in hidden:
                    yield from commands(sub, path + (name,))


def long_options(parser: argparse.ArgumentParser) -> List[str]:
    """The parser's own long options, without --help and hidden ones."""
    out = []
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        if action.help == argparse.SUPPRESS:
            continue
        out.extend(o for o in action.option_strings if o.startswith("--"))
    return out


def mentions(text: str, option: str) -> bool:
    return re.search(r"(?<![\w-])%s(?![\w-])" % re.escape(option), text) is not None


def section_of(docs: Dict[str, str], command: str) -> str:
    """The text of every section whose heading names ``command`` as a word."""
    return "\n".join(body for heading, body in docs.items()
                     if command in re.findall(r"[\w-]+", heading))


def test_every_command_and_option_is_in_cli_md():
    with open(CLI_DOC, "r", encoding="utf-8") as f:
        head, docs = sections(f.read())
    parser = build_parser()
    missing = []
    seen = 0
    for path, sub in commands(parser):
        if not path:
            text = head
        else:
            text = section_of(docs, path[0])
            if not text:
                missing.append("no '## %s' section for the command" % path[0])
                continue
            if len(path) > 1 and not re.search(r"\b%s\b" % re.escape(" ".join(path)), text):
                missing.append("'%s' is not named in the '%s' section" % (" ".join(path), path[0]))
        for option in long_options(sub):
            seen += 1
            if not mentions(text, option):
                missing.append("%s %s" % (" ".join(("edge-agent",) + path), option))
    assert seen > 50, "the parser walk found only %d options" % seen
    assert not missing, "docs/cli.md lacks:\n" + "\n".join(missing)


def test_the_walk_reaches_nested_and_skips_hidden_commands():
    """The walk itself: a sub-subcommand's options are found, a hidden option is not."""
    paths = {p: sub for p, sub in commands(build_parser())}
    assert ("fleet", "render") in paths and ("keys", "generate") in paths
    assert ("doctor",) in paths
    assert "--inventory" in long_options(paths[("fleet", "render")])
    hidden = [o for a in paths[("testbed",)]._actions if a.help == argparse.SUPPRESS
              for o in a.option_strings]
    assert not set(hidden) & set(long_options(paths[("testbed",)]))
