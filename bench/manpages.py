"""A help-page retrieval set made on this machine: its man(1) pages, asked plain questions.

Issue 17's held-out sets include command-line help pages asked natural
questions; this builds a set of that shape from what is installed here, so
that a change to the fit can be checked on it (``bench/whitening.py
--datasets manpages``). The pages are rendered at run time with ``man -P
cat`` and ``col -b`` and never shipped (each page keeps its own licence);
the 48 questions below were written for this project (its licence) with the
pages that answer each. The corpus is every target page found plus a random
sample of ``PAGES`` other section-1 pages (seed 0), so what it holds depends
on the packages installed: the script prints how many pages and questions
it used. A question counts only when one of its pages is installed.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

MAN1 = Path("/usr/share/man/man1")
PAGES = 3000

QUESTIONS = [
    ("how do I count the number of lines in a file", ["wc"]),
    ("show how much disk space a folder uses", ["du"]),
    ("how much free space is left on my disks", ["df"]),
    ("look for files by name below a directory", ["find", "locate"]),
    ("search for a word inside text files", ["grep"]),
    ("change who owns a file", ["chown"]),
    ("change the permissions of a file", ["chmod"]),
    ("compress a file to make it smaller", ["gzip", "bzip2", "xz", "zip"]),
    ("unpack an archive of many files", ["tar", "unzip"]),
    ("list the programs that are running right now", ["ps", "top"]),
    ("stop a running program by its process id", ["kill"]),
    ("download a file from a web address", ["wget", "curl"]),
    ("put the lines of a text file in alphabetical order", ["sort"]),
    ("remove repeated lines that follow each other", ["uniq"]),
    ("show the first few lines of a file", ["head"]),
    ("watch the end of a log file as it grows", ["tail"]),
    ("make a shortcut that points to another file", ["ln"]),
    ("copy files to another computer over a secure connection", ["scp", "rsync", "sftp"]),
    ("print the current date and time", ["date"]),
    ("compare two files line by line", ["diff", "cmp", "comm"]),
    ("who else is logged in to this machine", ["who", "w", "users"]),
    ("give a file a new name", ["mv", "rename"]),
    ("make a new folder", ["mkdir"]),
    ("how long has the computer been running since it started", ["uptime"]),
    ("replace or delete characters in text", ["tr"]),
    ("print the contents of a file on the screen", ["cat", "less", "more"]),
    ("delete a file", ["rm", "unlink"]),
    ("log in to a remote server from the terminal", ["ssh"]),
    ("what is the name of this computer", ["hostname", "uname"]),
    ("which user am I logged in as", ["whoami", "id"]),
    ("change my login password", ["passwd"]),
    ("how much memory is free", ["free", "top"]),
    ("take out certain columns from each line", ["cut", "awk"]),
    ("find and replace text in a file from the command line", ["sed"]),
    ("send output to a file and the screen at the same time", ["tee"]),
    ("update the modification time of a file or create an empty one", ["touch"]),
    ("compute a checksum of a file", ["md5sum", "sha256sum", "cksum"]),
    ("encode a file as text to send it by email", ["base64"]),
    ("print a sequence of numbers", ["seq"]),
    ("wait a few seconds before the next command", ["sleep"]),
    ("run a command again every few seconds and show its output", ["watch"]),
    ("find out where a program is installed", ["which", "whereis"]),
    ("show the kernel version", ["uname"]),
    ("print the lines of a file in reverse order", ["tac", "rev"]),
    ("show the directory I am in", ["pwd"]),
    ("copy a file", ["cp"]),
    ("list the files in a folder", ["ls"]),
    ("delete an empty folder", ["rmdir"]),
]


def available() -> bool:
    return MAN1.is_dir() and shutil.which("man") is not None and shutil.which("col") is not None


def render(name: str) -> str:
    """The page ``name`` of section 1 as plain text, whitespace collapsed ("" when it does not render)."""
    try:
        page = subprocess.run(["man", "-P", "cat", "1", name], capture_output=True, text=True, timeout=30,
                              env={**os.environ, "MANWIDTH": "100"}).stdout
        plain = subprocess.run(["col", "-b"], input=page, capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    return " ".join(plain.split())


def build(work: Path, pages: int = PAGES) -> tuple[Path, Path, Path, int, int]:
    """Write ``corpus.jsonl``, ``queries.jsonl`` and ``qrels.tsv`` under ``work/manpages-data`` (kept
    and reused); returns their paths, the number of pages and of questions."""
    folder = work / "manpages-data"
    corpus, queries, qrels = folder / "corpus.jsonl", folder / "queries.jsonl", folder / "qrels.tsv"
    if not corpus.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        names = sorted({f.name.split(".1")[0] for f in MAN1.iterdir() if ".1" in f.name})
        targets = sorted({t for _, ts in QUESTIONS for t in ts} & set(names))
        others = [n for n in names if n not in targets]
        chosen = targets + random.Random(0).sample(others, min(pages, len(others)))
        with ThreadPoolExecutor(2) as pool:
            texts = list(pool.map(render, chosen))
        with open(corpus, "w", encoding="utf-8") as f:
            for name, text in zip(chosen, texts):
                if text:
                    f.write(json.dumps({"_id": name, "text": text}) + "\n")
    held = {json.loads(line)["_id"] for line in corpus.read_text(encoding="utf-8").splitlines()}
    asked = [(q, [t for t in ts if t in held]) for q, ts in QUESTIONS]
    asked = [(q, ts) for q, ts in asked if ts]
    with open(queries, "w", encoding="utf-8") as f, open(qrels, "w", encoding="utf-8") as g:
        g.write("query-id\tcorpus-id\tscore\n")
        for i, (q, ts) in enumerate(asked):
            f.write(json.dumps({"_id": f"q{i}", "text": q}) + "\n")
            g.writelines(f"q{i}\t{t}\t1\n" for t in ts)
    return corpus, queries, qrels, len(held), len(asked)
