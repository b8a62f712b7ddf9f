"""The operator's ``semsearch index`` commands: get, list, export, backup, restore, compact.

A thin layer over ``Index``/``ShardedIndex`` (``index.storage.operations``,
``index.distributed.operations``), registered on the ``index`` group by ``cli.py`` with its
shared options handed over (so this module never imports ``cli``). Nothing heavy is imported
before a command runs.
"""

from __future__ import annotations

import json
import sys
from typing import Any, Callable

import click

from index.errors import SemsearchError


def _line(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False)


def read_ids(source: str) -> list[str]:
    """Ids one per line from a file, or from standard input for ``-``; blank lines are skipped."""
    if source == "-":
        lines = sys.stdin.read().splitlines()
    else:
        try:
            with open(source, encoding="utf-8") as f:
                lines = f.read().splitlines()
        except OSError as exc:
            raise SemsearchError(f"{source}: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise SemsearchError(f"{source}: not UTF-8 text (one id a line)") from None
    return [line.strip() for line in lines if line.strip()]


def register(group: click.Group, *, index_option: Callable, wait_option: Callable,
             parse_where: Callable, open_index: Callable) -> None:
    """Add the commands to ``group`` (the ``index`` group), with the CLI's shared options."""

    def where_option(f):
        return click.option("--where", multiple=True, metavar="KEY=VALUE",
                            help="Only documents whose metadata KEY equals VALUE (repeatable; as for query).")(f)

    @group.command("get")
    @click.argument("ids", nargs=-1, required=True)
    @index_option
    @click.option("--vectors", is_flag=True, help="Add each document's passages with their stored vectors.")
    def index_get(ids, index_path, vectors) -> None:
        """Print stored documents by id, one JSON object a line (exit 1 if one is missing).

        \b
        Example:
          semsearch index get faq12 faq13 --index my-index
        """
        found = open_index(index_path).get(ids, vectors=vectors)
        for doc in found:
            click.echo(_line(doc.as_dict()))
        missing = [i for i in dict.fromkeys(ids) if i not in {d.id for d in found}]
        if missing:
            raise SemsearchError(f"not in the index: {', '.join(missing[:10])}"
                                 + (f" and {len(missing) - 10} more" if len(missing) > 10 else ""))

    @group.command("list")
    @index_option
    @where_option
    @click.option("--limit", type=click.IntRange(0), default=20, show_default=True, help="Documents to show.")
    @click.option("--offset", type=click.IntRange(0), default=0, help="Documents to skip first (id order).")
    @click.option("--after", default=None, metavar="ID", help="Start after this id (for paging large indexes).")
    @click.option("--json", "as_json", is_flag=True, help="Print one JSON object a line.")
    def index_list(index_path, where, limit, offset, after, as_json) -> None:
        """List stored documents in id order, a page at a time.

        \b
        Example:
          semsearch index list --index my-index --limit 5
          semsearch index list --index my-index --where lang=en --after faq12
        """
        last, shown = None, 0
        for doc in open_index(index_path).documents(where=parse_where(where), limit=limit, offset=offset,
                                                    after=after):
            shown += 1
            last = doc.id
            if as_json:
                click.echo(_line(doc.as_dict()))
            else:
                snippet = " ".join(doc.text.split())
                click.echo(f"{doc.id}\t{snippet[:80] + ('…' if len(snippet) > 80 else '')}")
        if limit and shown == limit:
            click.echo(f"next page: --after {last}", err=True)

    @group.command("export")
    @index_option
    @where_option
    @click.option("--vectors", is_flag=True,
                  help="Add each document's passages with their stored vectors (field 'passages'; "
                       "leave it out to build an index from the file again).")
    def index_export(index_path, where, vectors) -> None:
        """Print every stored document as JSONL (id, text, metadata), one read snapshot, streamed.

        `index build` reads the file back: same ids, texts and metadata.

        \b
        Example:
          semsearch index export --index my-index > docs.jsonl
          semsearch index build docs.jsonl --index copy-index
        """
        n = 0
        for doc in open_index(index_path).documents(where=parse_where(where), vectors=vectors):
            click.echo(_line(doc.as_input()))
            n += 1
        click.echo(f"{index_path}: exported {n} document(s)", err=True)

    @group.command("backup")
    @click.argument("destination", type=click.Path(file_okay=False))
    @index_option
    @click.option("--force", is_flag=True, help="Replace an index already at DESTINATION.")
    def index_backup(destination, index_path, force) -> None:
        """Copy one committed generation of the index to DESTINATION while it serves.

        The copy is itself an index (query it, check it); put it back with `index restore`.

        \b
        Example:
          semsearch index backup backups/my-index-monday --index my-index
        """
        result = open_index(index_path).backup(destination, force=force)
        note = "" if result.vectors_copied else " (vectors are rebuilt from the stored ones on first open)"
        click.echo(f"{destination}: backed up generation {result.generation} of {index_path}, "
                   f"{result.documents} document(s), {result.bytes / 2**20:.1f} MiB{note}", err=True)

    @group.command("restore")
    @click.argument("backup", type=click.Path(file_okay=False, exists=True))
    @index_option
    @wait_option
    def index_restore(backup, index_path, wait) -> None:
        """Put a backup in place of the index (as `index build --force` replaces one: swapped in whole).

        \b
        Example:
          semsearch index restore backups/my-index-monday --index my-index
        """
        from pathlib import Path

        from index.distributed.shards import is_sharded
        from index.storage.backup import restore

        if is_sharded(backup) or is_sharded(index_path):
            raise SemsearchError("restore one shard at a time (give a shard folder as BACKUP and --index)")
        result = restore(Path(backup), Path(index_path), wait=wait)
        click.echo(f"{index_path}: restored generation {result.generation} from {backup}, "
                   f"{result.documents} document(s)", err=True)

    @group.command("compact")
    @index_option
    @wait_option
    def index_compact(index_path, wait) -> None:
        """Give disk space back after deletes: VACUUM under the write lock while readers go on.

        \b
        Example:
          semsearch index compact --index my-index
        """
        results = open_index(index_path).compact(wait=wait)
        for r in results if isinstance(results, list) else [results]:
            click.echo(f"{r.path}: {r.bytes_before / 2**20:.1f} MiB -> {r.bytes_after / 2**20:.1f} MiB "
                       f"({r.seconds:.1f} s)", err=True)
