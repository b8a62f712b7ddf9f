"""The ``semsearch`` command: a thin click layer over the ``index`` and ``search`` APIs.

Machine output (results, JSON, vectors) goes to standard output; progress,
warnings and errors go to standard error. A user mistake is one line and a
non-zero exit, never a traceback.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Iterable

import click

from index import options
from index.errors import SemsearchError

DEFAULT_INDEX = "semsearch-index"
INDEX_HELP = "Index folder (default: $SEMSEARCH_INDEX, else ./semsearch-index)."


# --- shared plumbing -----------------------------------------------------------
class Progress:
    """A one-line counter on standard error: redrawn in place on a terminal, a line every 10 s otherwise."""

    def __init__(self, label: str, total: int | None = None, quiet: bool = False):
        self.label, self.total, self.quiet = label, total, quiet
        self.done = 0
        self.started = self._last = time.monotonic()
        self.tty = sys.stderr.isatty()

    def __call__(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if self.quiet or now - self._last < (0.1 if self.tty else 10.0):
            return
        self._last = now
        self._draw(end="\r" if self.tty else "\n")

    def _draw(self, end: str) -> None:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        of = f"/{self.total}" if self.total else ""
        click.echo(f"{self.label}: {self.done}{of} ({self.done / elapsed:.1f}/s)", err=True, nl=False)
        click.echo(end, err=True, nl=False)

    def finish(self) -> None:
        if not self.quiet and self.tty and self.done:
            self._draw(end="\n")


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    click.echo(f"warning: {message}", err=True)


class _NoticeHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        click.echo(f"note: {record.getMessage()}", err=True)


def _show_notices() -> None:
    """One-line notices of the library (e.g. a model prepared for ONNX Runtime) on standard error."""
    logger = logging.getLogger("semsearch")
    if not any(isinstance(h, _NoticeHandler) for h in logger.handlers):
        logger.addHandler(_NoticeHandler())
        logger.setLevel(logging.INFO)
        logger.propagate = False


class SemsearchGroup(click.Group):
    """Turns user errors (SemsearchError, missing files, interrupts) into one line and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        warnings.showwarning = _show_warning
        _show_notices()
        try:
            return super().invoke(ctx)
        except SemsearchError as exc:
            raise click.ClickException(str(exc)) from None
        except KeyboardInterrupt:
            click.echo("interrupted; everything committed before now is kept", err=True)
            ctx.exit(130)
        except sqlite3.DatabaseError as exc:  # e.g. "database or disk is full"; the transaction was rolled back
            raise click.ClickException(f"index database error: {exc}; its last transaction was rolled back") from None
        except OSError as exc:
            if isinstance(exc, (BrokenPipeError,)):
                ctx.exit(0)
            where = f"{exc.filename}: " if exc.filename else ""
            raise click.ClickException(f"{where}{exc.strerror or exc}") from None


def index_option(f):
    return click.option("--index", "index_path", envvar="SEMSEARCH_INDEX", default=DEFAULT_INDEX,
                        show_default=False, type=click.Path(file_okay=False), help=INDEX_HELP)(f)


def quiet_option(f):
    return click.option("--quiet", "-q", is_flag=True, help="No progress on standard error.")(f)


def batch_size_option(f):
    return click.option("--batch-size", type=int, default=options.DEFAULT_BATCH_SIZE, show_default=True,
                        help="Long texts per model call (short texts share their token budget; ONNX Runtime "
                             "takes fewer long texts a call, its own measured count).")(f)


def search_options(f):
    f = click.option("--nprobe", type=int, default=None, help="IVF lists to visit (default: tuned for recall@10 >= 0.95).")(f)
    f = click.option("--ef-search", type=int, default=None, help="HNSW search breadth (default: tuned for recall@10 >= 0.95).")(f)
    return f


def hybrid_option(f):
    return click.option("--hybrid/--no-hybrid", "hybrid", default=None,
                        help="Fuse a BM25 ranking with the vector ranking by their z-scores (default: as the "
                             "index records, off unless built with --hybrid; an index without a BM25 index gets "
                             "one built in memory). Needs bm25s.")(f)


def whitening_options(f):
    """--whitening and --whitening-dims (None: the default at build, as recorded at rebuild)."""
    f = click.option("--whitening-dims", type=click.IntRange(0), default=None,
                     help="Keep the first K whitened directions (smaller vectors; 0: all, the default).")(f)
    return click.option("--whitening", type=click.Choice(options.WHITENINGS), default=None,
                        help="Whiten the vectors with a transform fitted on the index (auto: where measured to "
                             "help, i.e. layer -2 of the embedded model; off: the method's raw vectors).")(f)


def wait_option(f):
    return click.option("--wait", is_flag=True,
                        help="If another process is writing the index, wait for it instead of failing.")(f)


def engine_options(f):
    f = click.option("--ray-actors", type=click.IntRange(1), default=None,
                     help="With --engine ray: encoder actors (default: one per CPU of the Ray cluster).")(f)
    f = click.option("--ray-address", default=None, metavar="ADDR",
                     help="With --engine ray: the Ray cluster (auto: the one this machine joined with `ray start`; "
                          "ray://HOST:10001 for a remote one; default: a new Ray on this machine).")(f)
    f = click.option("--engine", type=click.Choice(options.ENGINES), default="local", show_default=True,
                     help="Who encodes: this process, or a Ray actor pool (pip install 'semsearch[ray]'); "
                          "this process writes the index either way.")(f)
    return f


def _encoding_engine(engine, ray_address, ray_actors, batch_size):
    """None for the local engine (the index's own encoder), else the Ray engine."""
    if engine != "ray":
        if ray_address or ray_actors:
            raise SemsearchError("--ray-address and --ray-actors need --engine ray")
        return None
    from index.distributed.ray_engine import RayEngine, RaySettings

    return RayEngine(RaySettings(address=ray_address, actors=ray_actors, batch_size=batch_size))


def _open_for_writing(index_path, **kw):
    """An index folder opened for adding or deleting: sharded or not, whichever it holds."""
    from index.distributed.shards import ShardedIndex, is_sharded
    from index.indexer import Index

    return (ShardedIndex if is_sharded(index_path) else Index).open(index_path, **kw)


def model_options(default_layer: int | None = options.DEFAULT_LAYER):
    """--model/--layer/--pooling/--max-length/--precision/--backend (None defaults mean: keep what is recorded)."""
    def decorate(f):
        f = keep_hangul_option(f)
        f = click.option("--backend", type=click.Choice(options.BACKENDS), default=None,
                         help="Inference backend (default auto: by CPU, confirmed by a measurement cached per model "
                              "and machine; batches and single queries may run on different ones: see semsearch doctor).")(f)
        f = click.option("--precision", type=click.Choice(options.PRECISIONS), default=None,
                         help="Arithmetic for encoding (default auto: bf16 on CPUs with bf16 instructions, fp16 on "
                              "CUDA, when a probe shows vectors within cosine 0.999 of fp32; else fp32). "
                              "int8 (opt-in, CPU, ONNX Runtime) is refused below cosine 0.99 to fp32.")(f)
        f = click.option("--max-length", type=int, default=None,
                         help="Tokens per model input, special tokens included (default: the model's, 256 for the embedded one).")(f)
        f = click.option("--pooling", type=click.Choice(options.POOLINGS),
                         default=None if default_layer is None else options.DEFAULT_POOLING,
                         help="How token vectors become a sentence vector (default: mean over real tokens).")(f)
        f = click.option("--layer", type=int, default=default_layer,
                         help="Hidden layer to pool; negative counts from the top (default: -2, the second-to-last).")(f)
        f = click.option("--model", envvar="SEMSEARCH_MODEL", default=None,
                         help="Hugging Face model id or local folder (default: $SEMSEARCH_MODEL, else the embedded all-MiniLM-L6-v2).")(f)
        return f
    return decorate


def keep_hangul_option(f):
    return click.option("--keep-hangul/--no-keep-hangul", "keep_hangul", default=None,
                        help="Keep Hangul syllables whole where the model's tokenizer would cut them into jamo "
                             "(uncased BERT strips accents through NFD); default on for a new index, as recorded "
                             "for a rebuild.")(f)


def source_options(f):
    f = click.option("--strict", is_flag=True, help="Fail on unreadable input (invalid UTF-8, binary files) instead of skipping it.")(f)
    f = click.option("--format", "fmt", type=click.Choice(options.FORMATS), default=None,
                     help="Input format (default: from the file extension; standard input: JSONL if it starts with '{', else one document per line).")(f)
    f = click.option("--text-field", default=None, help="Field or column holding the text (default: text).")(f)
    f = click.option("--id-field", default=None, help="Field or column holding the id (default: _id or id).")(f)
    return f


def folder_options(f):
    """How far reading a folder may reach: symbolic links out of it, and the size of one document."""
    f = click.option("--max-document-mb", type=click.FloatRange(min=0.001), default=64.0, show_default=True,
                     help="Refuse a text file, or a JSONL line, larger than this.")(f)
    f = click.option("--follow-symlinks", is_flag=True,
                     help="Follow symbolic links that lead out of a folder being read (not followed by default).")(f)
    return f


def _read_sources(sources: Iterable[str], id_field, text_field, fmt, strict, follow_symlinks=False,
                  max_document_mb=64.0):
    from index.ingest.sources import ReadReport, read_documents

    report = ReadReport()
    docs = read_documents(list(sources), id_field=id_field, text_field=text_field, format=fmt,
                          strict=strict, report=report, follow_symlinks=follow_symlinks,
                          max_document_bytes=int(max_document_mb * 1024 * 1024))
    return docs, report


def _report_reading(report) -> None:
    for line in report.warnings[:20]:
        click.echo(f"warning: {line}", err=True)
    if len(report.warnings) > 20:
        click.echo(f"warning: ... and {len(report.warnings) - 20} more", err=True)


def _report_add(result, path, seconds: float, report) -> None:
    _report_reading(report)
    if result.duplicates:
        shown = ", ".join(result.duplicates[:5]) + (" ..." if len(result.duplicates) > 5 else "")
        click.echo(f"warning: {len(result.duplicates)} repeated id(s) in the input; the last of each was kept: {shown}", err=True)
    if result.skipped_empty:
        click.echo(f"warning: skipped {len(result.skipped_empty)} document(s) with no text: "
                   + ", ".join(result.skipped_empty[:5]), err=True)
    click.echo(
        f"{path}: {result.added} added, {result.updated} updated, {result.unchanged} unchanged"
        + (f", {result.metadata_updated} with new metadata" if result.metadata_updated else "")
        + f" ({result.passages} passages encoded) in {seconds:.1f} s",
        err=True,
    )


def _parse_where(clauses: Iterable[str], json_text: str | None = None) -> dict[str, Any] | None:
    """``--where`` clauses and ``--filter JSON``, ANDed, as one filter (``index.storage.filter_syntax``)."""
    from index.storage.filter_syntax import combine

    return combine(clauses, json_text)


def _and(*filters: dict[str, Any] | None) -> dict[str, Any] | None:
    given = [f for f in filters if f]
    return None if not given else given[0] if len(given) == 1 else {"$and": given}


def _dump(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False)


# --- the command tree -----------------------------------------------------------------
@click.group(cls=SemsearchGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="semsearch", message="semsearch %(version)s")
def cli() -> None:
    """Semantic search over your documents with BERT sentence vectors, FAISS and SQLite.

    \b
    Example:
      semsearch index build docs/ --index my-index
      semsearch query "how do I reset my password" --index my-index
    """


@cli.group("index", cls=SemsearchGroup)
def index_group() -> None:
    """Build, update, rebuild and inspect an index.

    \b
    Example:
      semsearch index build corpus.jsonl --index my-index
      semsearch index info --index my-index
    """


@index_group.command("build")
@click.argument("sources", nargs=-1, required=True)
@index_option
@click.option("--force", is_flag=True, help="Replace an existing index (the old one stays until the new one is complete).")
@model_options()
@click.option("--passage-overlap", type=int, default=None,
              help="Tokens shared by consecutive passages of a long document (default: 32, at most a quarter of the window).")
@click.option("--index-type", type=click.Choice(options.INDEX_TYPES), default=options.DEFAULT_INDEX_TYPE,
              show_default=True, help="FAISS index: exact flat, or approximate (auto chooses by size); ivf-disk keeps its lists on disk, "
                   "memory-mapped, for an index larger than memory.")
@click.option("--target-recall", type=float, default=None,
              help="Recall@10 against exact search that approximate indexes tune their search settings to, "
                   "measured on the index's own passages (default 0.95).")
@batch_size_option
@click.option("--hybrid", is_flag=True,
              help="Also keep a BM25 index of the passages (updated with every write) and make queries fuse it "
                   "with the vectors by default (needs bm25s: pip install 'semsearch[hybrid]').")
@click.option("--shards", type=click.IntRange(1), default=None,
              help="Make a sharded index: N indexes in the folder, each document in the one its id hashes to.")
@whitening_options
@engine_options
@source_options
@folder_options
@quiet_option
@wait_option
def index_build(sources, index_path, force, model, layer, pooling, max_length, precision, backend, keep_hangul,
                passage_overlap, index_type, target_recall, batch_size, hybrid, shards, whitening, whitening_dims,
                engine, ray_address, ray_actors, id_field, text_field, fmt, strict, follow_symlinks, max_document_mb, quiet, wait) -> None:
    """Create an index from SOURCES (JSONL, CSV, TSV, .txt/.md files, folders, or - for stdin).

    \b
    Example:
      semsearch index build corpus.jsonl --index my-index
      semsearch index build notes/ --index notes-index --layer -1
      semsearch index build corpus.jsonl --index my-index --hybrid
      cat faq.jsonl | semsearch index build - --index faq-index --force
      semsearch index build corpus.jsonl --index big --shards 4 --engine ray --ray-address auto
    """
    from functools import partial

    from index.indexer import Index

    build = partial(Index.build, wait=wait)  # --force: wait for the old index's writers to finish
    if shards:
        from index.distributed.shards import ShardedIndex

        if hybrid:
            raise SemsearchError("--hybrid is not available with --shards (BM25 statistics would differ per shard)")
        build = partial(ShardedIndex.build, shards=shards)
    encoder_engine = _encoding_engine(engine, ray_address, ray_actors, batch_size)
    docs, report = _read_sources(sources, id_field, text_field, fmt, strict, follow_symlinks, max_document_mb)
    progress = Progress("encoding documents", quiet=quiet)
    started = time.monotonic()
    index, result = build(
        index_path, docs, force=force, progress=progress, engine=encoder_engine, model=model, layer=layer, pooling=pooling,
        max_length=max_length, passage_overlap=passage_overlap, precision=precision, backend=backend,
        keep_hangul=keep_hangul, batch_size=batch_size,
        index_type=index_type, target_recall=target_recall, hybrid=hybrid,
        **({"whitening": whitening, "whitening_dims": whitening_dims} if whitening or whitening_dims else {}),
    )
    progress.finish()
    _report_add(result, index_path, time.monotonic() - started, report)
    _report_int8(index)


def _report_int8(index) -> None:
    """int8 is opt-in and approximate: say how close it came to fp32."""
    if index.config.get("precision") == "int8":
        from index.model.precision import MIN_INT8_COSINE

        click.echo(f"int8: lowest cosine to fp32 on the probe texts {index.encoder.export_cosine:.5f} "
                   f"(refused below {MIN_INT8_COSINE})", err=True)


@index_group.command("add")
@click.argument("sources", nargs=-1, required=True)
@index_option
@batch_size_option
@engine_options
@source_options
@folder_options
@quiet_option
@wait_option
def index_add(sources, index_path, batch_size, engine, ray_address, ray_actors, id_field, text_field, fmt, strict,
              follow_symlinks, max_document_mb, quiet, wait) -> None:
    """Add or replace documents (an existing id is replaced; unchanged texts are not re-encoded).

    On a sharded index each document goes to the shard its id hashes to.

    \b
    Example:
      semsearch index add new-articles.jsonl --index my-index
      semsearch index add new-articles.jsonl --index my-index --engine ray --ray-address auto
    """
    index = _open_for_writing(index_path, batch_size=batch_size, wait=wait)
    encoder_engine = _encoding_engine(engine, ray_address, ray_actors, batch_size)
    docs, report = _read_sources(sources, id_field, text_field, fmt, strict, follow_symlinks, max_document_mb)
    progress = Progress("encoding documents", quiet=quiet)
    started = time.monotonic()
    result = index.add(docs, progress=progress, engine=encoder_engine)
    progress.finish()
    _report_add(result, index_path, time.monotonic() - started, report)


@index_group.command("delete")
@click.argument("ids", nargs=-1)
@index_option
@wait_option
@click.option("--ids-from", default=None, metavar="FILE", help="Also delete the ids in FILE, one a line (- : standard input).")
@click.option("--where", multiple=True, metavar="KEY=VALUE", help="Delete every document whose metadata KEY equals VALUE.")
def index_delete(ids, index_path, wait, ids_from, where) -> None:
    """Delete documents by id, by a file of ids or by metadata (from their shards, on a sharded index).

    \b
    Example:
      semsearch index delete faq12 faq13 --index my-index
      semsearch index delete --ids-from old-ids.txt --index my-index
    """
    from search.cli_operate import read_ids

    ids = [*ids, *(read_ids(ids_from) if ids_from else [])]
    if not ids and not where:
        raise SemsearchError("give ids to delete, --ids-from FILE or --where KEY=VALUE")
    if ids and where:
        raise SemsearchError("give ids or --where, not both")
    index = _open_for_writing(index_path, wait=wait)
    result = index.delete_where(_parse_where(where)) if where else index.delete(ids)
    click.echo(f"{index_path}: deleted {len(result.deleted)} document(s)", err=True)
    if result.missing:
        click.echo(f"warning: not in the index: {', '.join(result.missing[:10])}", err=True)


@index_group.command("rebuild")
@index_option
@model_options(default_layer=None)
@click.option("--passage-overlap", type=int, default=None, help="Tokens shared by consecutive passages (default: as recorded).")
@click.option("--index-type", type=click.Choice(options.INDEX_TYPES), default=None,
              help="Switch the FAISS index type (alone, this re-indexes the stored vectors without encoding).")
@click.option("--target-recall", type=float, default=None,
              help="Tune the search settings of an approximate index to this recall@10 (default: as recorded).")
@batch_size_option
@whitening_options
@quiet_option
@wait_option
def index_rebuild(index_path, model, layer, pooling, max_length, precision, backend, keep_hangul, passage_overlap,
                  index_type, target_recall, batch_size, whitening, whitening_dims, quiet, wait) -> None:
    """Re-encode every stored document, optionally with another model, layer or pooling.

    Searches keep using the old vectors until the new ones are complete.

    \b
    Example:
      semsearch index rebuild --layer -1 --index my-index
      semsearch index rebuild --index-type ivf --target-recall 0.98 --index my-index
      semsearch index rebuild --whitening on --whitening-dims 128 --index my-index
    """
    from index.indexer import Index

    index = Index.open(index_path, batch_size=batch_size, wait=wait)
    progress = Progress("re-encoding documents", total=index.store.counts()[0], quiet=quiet)
    result = index.rebuild(model=model, layer=layer, pooling=pooling, max_length=max_length,
                           passage_overlap=passage_overlap, precision=precision, backend=backend,
                           keep_hangul=keep_hangul, index_type=index_type, target_recall=target_recall,
                           whitening=whitening, whitening_dims=whitening_dims, progress=progress)
    progress.finish()
    _report_int8(index)
    cfg = index.config
    click.echo(f"{index_path}: {result.documents} documents ({result.passages} passages) "
               f"with {cfg['model']}, layer {cfg['layer']}, {cfg['pooling']} pooling, "
               f"{index.info().vector_index} index, in {result.seconds:.1f} s", err=True)


@index_group.command("fit-queries")
@click.argument("queries", required=False, type=click.Path(allow_dash=True))
@index_option
@click.option("--clear", is_flag=True, help="Forget the recorded queries (and give no QUERIES).")
@click.option("--text-field", default=None, help="The JSONL field of the query text (default: text, question or query).")
@wait_option
def index_fit_queries(queries, index_path, clear, text_field, wait) -> None:
    """Refit the index's whitening with sample queries: texts of questions its users ask.

    QUERIES: one a line, or JSONL with a text field (BEIR queries files and `faq calibrate` question files work
    as they are; only the texts are read, never labels; - reads standard input). They replace any recorded before and are pooled into every later fit;
    nothing is encoded but them and the fit's own samples. Measured: SciFact's 809 non-test claims lifted its
    300 test claims' nDCG@10 from 0.517 to 0.570, and from 0.564 to 0.572 since fits pool the corpus's
    sentences (docs/quality.md).

    \b
    Example:
      semsearch index fit-queries past-queries.txt --index my-index
      semsearch index fit-queries --clear --index my-index
    """
    from index.indexer import Index
    from index.storage.query_sample import read_queries, record_queries

    if clear == bool(queries):
        raise SemsearchError("give a QUERIES file, or --clear to forget the recorded queries")
    texts: list[str] = []
    if not clear:
        texts = read_queries(queries, text_field)
        if not texts:
            raise SemsearchError(f"{queries}: no query text found (use --clear to forget the recorded ones)")
    index = Index.open(index_path, wait=wait)
    recorded = record_queries(index, texts)
    fit = index.config.get("whitening_fit") or {}
    click.echo(f"{index_path}: {recorded} sample queries recorded; whitening refitted on {fit.get('source', '?')}",
               err=True)


@index_group.command("info")
@index_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def index_info(index_path, as_json) -> None:
    """Show an index's model, layer, pooling, sizes and counts (and its shards, when sharded).

    \b
    Example:
      semsearch index info --index my-index --json
    """
    from index.distributed.shards import ShardedIndex, is_sharded
    from index.indexer import Index

    if is_sharded(index_path):
        sharded = ShardedIndex.open(index_path).info()
        if as_json:
            click.echo(_dump(sharded.as_dict()))
            return
        info = {k: v for k, v in sharded.as_dict().items() if k != "shards"}
        info.update({f"shard {n}": f"{s.path}: {s.documents} documents, {s.passages} passages, generation "
                                   f"{s.generation}" for n, s in enumerate(sharded.shards)})
        info.update({k: v for k, v in sharded.shards[0].as_dict().items() if k not in info and k not in (
            "path", "documents", "passages", "vectors", "generation", "complete", "created_at", "updated_at")})
    else:
        info = Index.open(index_path).info().as_dict()
        if as_json:
            click.echo(_dump(info))
            return
    width = max(len(k) for k in info)
    for key, value in info.items():
        if key == "whitening" and isinstance(value, dict):  # one line: mode, decision, what it was fitted on
            fit = value.get("fit") or {}
            value = (f"{value.get('mode')}, {value.get('dims') or 'all'} dims: {fit.get('reason', 'not fitted yet')}"
                     + (f" (fitted on {fit['source']}, {fit['dimension']}-d)" if fit.get("sha256") else ""))
        click.echo(f"{key.ljust(width)}  {value}")


@index_group.command("split")
@index_option
@click.option("--shards", type=click.IntRange(1), required=True, help="Number of shards to make.")
@click.option("--into", "into", required=True, type=click.Path(file_okay=False),
              help="Folder of the new sharded index (the index itself is left as it is).")
@click.option("--force", is_flag=True, help="Replace an index already at --into.")
@quiet_option
def index_split(index_path, shards, into, force, quiet) -> None:
    """Copy an index into a sharded one: documents, passages and vectors, without encoding again.

    Each document goes to the shard its id hashes to; searching the sharded
    index gives the same hits as the original.

    \b
    Example:
      semsearch index split --shards 4 --index my-index --into my-index-4
      semsearch query "refund" --index my-index-4
    """
    from index.distributed.split import split_index

    progress = Progress("copying documents", quiet=quiet)
    started = time.monotonic()
    sharded, result = split_index(index_path, into, shards, force=force, progress=progress)
    progress.finish()
    counts = ", ".join(f"{i.documents}" for i in sharded.info().shards)
    click.echo(f"{into}: {result.added} documents ({result.passages} passages) copied from {index_path} into "
               f"{shards} shards ({counts} documents) in {time.monotonic() - started:.1f} s", err=True)


@index_group.command("check")
@index_option
@click.option("--sample", type=int, default=20, show_default=True, help="Passages to re-encode and compare.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def index_check(index_path, sample, as_json) -> None:
    """Verify an index: counts, FAISS id mapping, model fingerprint, and a sample re-encoded.

    Exits 1 when it finds a problem, and says how to fix it.

    \b
    Example:
      semsearch index check --index my-index
    """
    from index.indexer import Index

    report = Index.open(index_path).check(sample=sample)
    if as_json:
        click.echo(_dump(report.as_dict()))
    else:
        click.echo(f"{index_path}: {report.documents} documents, {report.passages} passages, {report.vectors} vectors")
        if report.sampled:
            click.echo(f"re-encoded {report.sampled} sampled passages: lowest cosine to the stored vectors {report.min_cosine:.6f}")
        if report.reference_cosine is not None:
            click.echo(f"encoder against the fp32 reference on the probe texts: lowest cosine {report.reference_cosine:.6f}")
        for note in report.notes:
            click.echo(f"note: {note}")
        for problem in report.problems:
            click.echo(f"problem: {problem}")
        click.echo("ok" if report.ok else f"{len(report.problems)} problem(s) found")
    if not report.ok:
        sys.exit(1)


@index_group.command("repair")
@index_option
@wait_option
def index_repair(index_path, wait) -> None:
    """Make an index consistent again from what SQLite holds (never deletes a document).

    Rewrites the FAISS file from the stored vectors, re-encodes documents that
    have no passages, and removes what interrupted writes left behind.

    \b
    Example:
      semsearch index repair --index my-index && semsearch index check --index my-index
    """
    from index.indexer import Index

    for action in Index.open(index_path, wait=wait).repair().actions:
        click.echo(action, err=True)


@cli.command("query")
@click.argument("text", required=False)
@index_option
@click.option("-k", "k", type=int, default=10, show_default=True, help="Number of documents to return.")
@click.option("--where", multiple=True, metavar="CLAUSE",
              help="Only documents matching CLAUSE (repeatable, all must match): lang=en, lang!=en, year>=2021, "
                   "lang in en,ko, text~E1234, key exists (docs/filters.md).")
@click.option("--filter", "filter_json", default=None, metavar="JSON",
              help='A filter in the JSON language, e.g. \'{"$or": [{"lang": "en"}, {"year": {"$gte": 2021}}]}\'.')
@click.option("--json", "as_json", is_flag=True, help="Print JSON (one object per query).")
@click.option("--queries", "queries_file", type=click.Path(dir_okay=False),
              help="Run every query of a BEIR queries.jsonl file; prints JSON lines. Bad lines are reported "
                   "as FILE:LINE on standard error and skipped (exit status 3).")
@click.option("--server", envvar="SEMSEARCH_SERVER", default=None, metavar="URL",
              help="Ask a running `semsearch serve` (e.g. http://127.0.0.1:8000) instead of opening the index "
                   "(default: $SEMSEARCH_SERVER).")
@search_options
@hybrid_option
@quiet_option
@click.pass_context
def query(ctx, text, index_path, k, where, filter_json, as_json, queries_file, server, ef_search, nprobe, hybrid,
          quiet) -> None:
    """Find the documents that mean the same as TEXT.

    \b
    Example:
      semsearch query "I forgot my login secret" -k 5
      semsearch query "refund" --where lang=en --where 'year>=2021' --json
      semsearch query "error E1234 on startup" --hybrid
      semsearch query --queries queries.jsonl --json > results.jsonl
      semsearch query "refund" --server http://127.0.0.1:8000
    """
    if (text is None) == (queries_file is None):
        raise SemsearchError("give either a query TEXT or --queries FILE")
    filters = _parse_where(where, filter_json)
    engine = _query_engine(server, index_path, ef_search, nprobe, hybrid)
    if queries_file:
        from search.beir import load_queries

        problems: list[str] = []
        queries = load_queries(queries_file, problems)
        for problem in problems:
            click.echo(f"skipped: {problem}", err=True)
        skipped = len(problems)
        for start in range(0, len(queries), 256):
            chunk = queries[start : start + 256]
            wheres = [_and(filters, q.where) for q in chunk]  # a line's own "where" too
            for q, outcome in zip(chunk, engine.search_many([q.text for q in chunk], k, wheres)):
                if outcome.get("error"):
                    click.echo(f"skipped: {queries_file}: query {q.id}: {outcome['error']}", err=True)
                    skipped += 1
                    continue
                click.echo(_dump({"query_id": q.id, "query": q.text, "hits": outcome["hits"]}))
        if skipped:
            click.echo(f"warning: {skipped} quer(ies) of {queries_file} skipped; the others were answered", err=True)
            ctx.exit(3)
        return
    hits = engine.search(text, k, filters)
    if as_json:
        click.echo(_dump({"query_id": None, "query": text, "hits": hits}))
        return
    if not hits:
        click.echo("no matching documents", err=True)
    for rank, hit in enumerate(hits, start=1):
        click.echo(f"{rank:>2}. {hit['score']:.4f}  {hit['id']}  {_snippet(hit['text'])}")
        passage = hit["passage"]
        if passage["start"] > 0 or passage["end"] < len(hit["text"]):
            click.echo(f"    passage {passage['order']} [{passage['start']}:{passage['end']}]: {_snippet(passage['text'])}")


class _LocalEngine:
    """`semsearch query` on an index folder; hits as the JSON dicts the server gives."""

    def __init__(self, index_path, ef_search, nprobe, hybrid=None):
        from search.sharded import open_searcher

        self.searcher = open_searcher(index_path, ef_search=ef_search, nprobe=nprobe, hybrid=hybrid)

    def search(self, text, k, where):
        return [h.as_dict() for h in self.searcher.search(text, k=k, where=where)]

    def search_many(self, texts, k, wheres):
        from search.searcher import SearchRequest

        return [o.as_dict() for o in self.searcher.search_batch([SearchRequest(t, k, w) for t, w in zip(texts, wheres)])]


def _query_engine(server, index_path, ef_search, nprobe, hybrid=None):
    if not server:
        return _LocalEngine(index_path, ef_search, nprobe, hybrid)
    if ef_search is not None or nprobe is not None:
        raise SemsearchError("--ef-search and --nprobe apply to an index opened here, not through --server")
    if hybrid is not None:
        raise SemsearchError("--hybrid/--no-hybrid apply to an index opened here; a server searches as its index records")
    from search.client import Client

    return Client(server)


def _snippet(text: str, width: int = 100) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


@cli.command("embed")
@click.argument("texts", nargs=-1)
@click.option("--input", "input_path", default=None,
              help="Read texts from a file: one per line for plain text (- for standard input), documents for .jsonl/.csv/.tsv.")
@model_options()
@batch_size_option
@click.option("--whiten-with", "whiten_with", default=None, type=click.Path(file_okay=False),
              help="Whiten the vectors with this index's transform, encoded by its model and layer (as its "
                   "FAISS vectors and queries are); without it, the method's raw vectors.")
@click.option("--as-query", "as_query", is_flag=True,
              help="Encode as search queries are encoded (the query path auto chose, no PyTorch import where "
                   "that is ONNX Runtime); by default as an index stores documents (the bulk path), whatever "
                   "the number of texts.")
@source_options
@quiet_option
def embed(texts, input_path, model, layer, pooling, max_length, precision, backend, keep_hangul, batch_size,
          whiten_with, as_query, id_field, text_field, fmt, strict, quiet) -> None:
    """Print sentence vectors as JSON lines: {"id": ..., "vector": [...]}, in input order.

    \b
    Example:
      semsearch embed "The bank raised its rates." "We sat on the river bank."
      semsearch embed --input sentences.txt --layer -1 > vectors.jsonl
      semsearch embed "reset my password" --whiten-with my-index --as-query
    """
    from index.model.encoder import Encoder
    from index.model.vector_json import json_arrays

    if bool(texts) == bool(input_path):
        raise SemsearchError("give either TEXT arguments or --input FILE")
    if texts:
        items = [(str(i), t) for i, t in enumerate(texts)]
    else:
        from index.ingest.sources import ReadReport, read_texts

        report = ReadReport()
        docs = read_texts(input_path, id_field=id_field, text_field=text_field, format=fmt,
                          strict=strict, report=report)
        items = [(d.id, d.text) for d in docs]
        _report_reading(report)
    whiten = None
    if whiten_with is not None:
        from index.indexer import Index

        with Index.open(whiten_with, batch_size=batch_size).snapshot() as snap:
            encoder, whiten = snap.whitened_encoder()
    else:
        encoder = Encoder.load(model, layer=layer, pooling=pooling, max_length=max_length,
                               batch_size=batch_size, precision=precision, backend=backend, keep_hangul=keep_hangul)
    progress = Progress("encoding texts", total=len(items), quiet=quiet)
    vectors = encoder.encode([t for _, t in items], progress=progress, bulk=not as_query)
    progress.finish()
    if whiten is not None:
        vectors = whiten.apply(vectors)
    for start in range(0, len(items), 1024):  # numbers written by numpy, lines written a chunk at a time
        arrays = json_arrays(vectors[start : start + 1024])
        click.echo("\n".join(f'{{"id": {_dump(item_id)}, "vector": {array}}}'
                             for (item_id, _), array in zip(items[start : start + 1024], arrays)))


@cli.command("doctor")
@click.option("--model", envvar="SEMSEARCH_MODEL", default=None,
              help="Hugging Face model id or local folder (default: $SEMSEARCH_MODEL, else the embedded all-MiniLM-L6-v2).")
@click.option("--layer", type=int, default=None, help="Hidden layer to pool (default: -2).")
@click.option("--precision", type=click.Choice(("auto", "fp32", "bf16")), default=None,
              help="The precision request whose candidates are weighed (default auto).")
@click.option("--rounds", type=click.IntRange(1, 20), default=3, show_default=True,
              help="Interleaved timing rounds.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def doctor(model, layer, precision, rounds, as_json) -> None:
    """Time the candidates of --backend auto on this machine now and show its choice and why.

    \b
    Example:
      semsearch doctor
    """
    from index.model.doctor import diagnose

    d = diagnose(model, layer=layer, precision=precision, rounds=rounds)
    if as_json:
        click.echo(_dump(d.as_dict()))
        return
    click.echo(f"cpu: {d.cpu}, {d.threads} threads, bf16 instructions: {'yes' if d.bf16_instructions else 'no'}")
    click.echo(f"model: {d.model}; candidates {', '.join(d.candidates)}; {d.rounds} interleaved rounds "
               "(medians; a batch of 16 long texts, 64 short texts, single queries)")
    click.echo(f"{'candidate':<12} {'long texts/s':>13} {'short texts/s':>14} {'query ms':>9}")
    for s in d.speeds:
        cells = [f"{v:.1f}" if v is not None else "-" for v in (s.long_texts_per_s, s.short_texts_per_s)]
        click.echo(f"{s.name:<12} {cells[0]:>13} {cells[1]:>14} "
                   f"{'-' if s.query_ms is None else f'{s.query_ms:.2f}':>9}")
    click.echo(f"bulk:  {d.bulk} ({d.bulk_reason})")
    click.echo(f"query: {d.query} ({d.query_reason})")
    if d.bf16_probe_cosine is not None:
        click.echo(f"bf16 probe: lowest cosine {d.bf16_probe_cosine:.5f} to fp32")
    if d.torch_build:
        click.echo("torch model: " + ("built from model.safetensors without transformers (shown to give its vectors)"
                                      if d.torch_build == "direct" else "loaded through transformers"))
    cached = (f"bulk {d.cached['bulk']}, query {d.cached['query']}" if d.cached else
              "none yet (the first encoder load measures and caches it)")
    click.echo(f"choice cached for this CPU, used by every process: {cached}")
    for note in d.notes:
        click.echo(f"note: {note}")


# --- the tutorial's token-level commands -----------------------------------------------------
class LayersCommand(click.Command):
    """Lets ``--layers -4 -3 -2 -1`` take several numbers (click options take one value each): the
    numbers that follow ``--layers`` are joined into one comma-separated value."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        out, i = [], 0
        while i < len(args):
            if args[i] == "--layers":
                j = i + 1
                while j < len(args) and args[j].lstrip("-").isdigit():
                    j += 1
                out += ["--layers", ",".join(args[i + 1 : j])] if j > i + 1 else [args[i]]
                i = j
            else:
                out.append(args[i])
                i += 1
        return super().parse_args(ctx, out)


def _parse_layers(ctx, param, value):
    if value is None:
        return None
    try:
        layers = [int(v) for v in str(value).replace(",", " ").split()]
    except ValueError:
        raise click.BadParameter("layers are whole numbers, e.g. --layers -4 -3 -2 -1") from None
    if not layers:
        raise click.BadParameter("give at least one layer")
    return layers


def word_options(f):
    f = click.option("--combine", type=click.Choice(options.COMBINES), default="sum", show_default=True,
                     help="How the chosen layers make one vector.")(f)
    f = click.option("--layers", callback=_parse_layers, default=None, metavar="N [N ...]",
                     help="Hidden layers to use; 0 is the embeddings, -1 the last (default: -4 -3 -2 -1).")(f)
    return f


def token_model_options(f):
    f = keep_hangul_option(f)
    f = click.option("--model", envvar="SEMSEARCH_MODEL", default=None,
                     help="Hugging Face model id or local folder (default: $SEMSEARCH_MODEL, else the embedded "
                          "all-MiniLM-L6-v2).")(f)
    return f


def _token_encoder(model, keep_hangul):
    """The encoder of the token commands: fp32 on PyTorch (exact, and nothing to export)."""
    from index.model.encoder import Encoder

    return Encoder.load(model, precision="fp32", backend="torch",
                        keep_hangul=True if keep_hangul is None else keep_hangul)


def _check_texts(texts) -> None:
    if not texts:
        raise SemsearchError("give at least one TEXT")
    for i, text in enumerate(texts, 1):
        if not text.strip():
            raise SemsearchError(f"text {i} is empty")


def _span(start, end) -> str:
    return "-" if start is None else f"{start}-{end}"


@cli.command("tokens")
@click.argument("texts", nargs=-1)
@token_model_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON line per text.")
def tokens_cmd(texts, model, keep_hangul, as_json) -> None:
    """Show each WordPiece token of TEXTS with its id, word and character span.

    Spans are in the text as given; special tokens ([CLS], [SEP]) are marked.
    A note or warning says when the tokenizer would cut Hangul syllables into
    jamo and what was done about it.

    \b
    Example:
      semsearch tokens "Here is the sentence I want embeddings for."
      semsearch tokens "배를 타고 여행을 간다." --json
    """
    _check_texts(texts)
    encoder = _token_encoder(model, keep_hangul)
    for n, text in enumerate(texts):
        toks = encoder.tokens(text)
        if as_json:
            click.echo(_dump({"text": text, "tokens": [t.as_dict() for t in toks]}))
            continue
        if n:
            click.echo()
        click.echo(f"text {n + 1}: {text}")
        width = max(len(t.token) for t in toks)
        click.echo(f"  {'#':>3}  {'token'.ljust(width)}  {'id':>6}  {'word':>4}  span")
        for i, t in enumerate(toks):
            where = "special" if t.special else f"{_span(t.start, t.end)}  {text[t.start:t.end]!r}"
            word = "-" if t.word is None else str(t.word)
            click.echo(f"  {i:>3}  {t.token.ljust(width)}  {t.id:>6}  {word:>4}  {where}")


def _vector_preview(vec, shown: int = 4) -> str:
    head = " ".join(f"{float(x):+.3f}" for x in vec[:shown])
    return f"[{head} ...]  norm {float((vec ** 2).sum()) ** 0.5:.2f}"


@cli.command("words", cls=LayersCommand)
@click.argument("texts", nargs=-1)
@token_model_options
@word_options
@click.option("--pieces", type=click.Choice(options.PIECES), default="mean", show_default=True,
              help="How a word's pieces make its vector: their mean, or the first piece.")
@click.option("--tokens", "per_token", is_flag=True, help="One vector per token instead of per word.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON line per word (or token), vector included.")
def words_cmd(texts, model, keep_hangul, layers, combine, pieces, per_token, as_json) -> None:
    """Word (or token) vectors of TEXTS from chosen hidden layers.

    By default, as in the tutorial, the sum of the last four layers; a word
    cut into pieces gets one vector (the mean of its pieces). Only the layers
    up to the deepest one asked for are computed.

    \b
    Example:
      semsearch words "The bank raised its rates." --layers -4 -3 -2 -1 --combine concat
      semsearch words "embeddings" --tokens --json
    """
    _check_texts(texts)
    encoder = _token_encoder(model, keep_hangul)
    layers = layers or list(options.WORD_LAYERS)
    if per_token:
        results = encoder.token_vectors(texts, layers=layers, combine=combine)
    else:
        results = encoder.word_vectors(texts, layers=layers, combine=combine, pieces=pieces)
    how = f"{combine} of layers {' '.join(str(x) for x in layers)}"
    for n, res in enumerate(results):
        if per_token:
            rows = [(t.token, t.start, t.end, [t.token], {"token": t.token, "id": t.id, "word": t.word,
                                                           "special": t.special}) for t in res.tokens]
        else:
            rows = [(w.text, w.start, w.end, list(w.pieces), {"word": w.text}) for w in res.words]
        if as_json:
            for (_, start, end, parts, extra), vec in zip(rows, res.vectors):
                click.echo(_dump({"text_index": n, **extra, "start": start, "end": end, "pieces": parts,
                                  "vector": [round(float(x), 6) for x in vec]}))
            continue
        if n:
            click.echo()
        click.echo(f"text {n + 1}: {res.text}")
        click.echo(f"  {res.vectors.shape[1]}-d vectors, {how}" + ("" if per_token else f", pieces: {pieces}"))
        width = max([len(r[0]) for r in rows] + [4])
        pw = max([len(" ".join(r[3])) for r in rows] + [6])
        click.echo(f"  {'#':>3}  {('token' if per_token else 'word').ljust(width)}  {'span':>7}  "
                   f"{'pieces'.ljust(pw)}  vector")
        for i, ((label, start, end, parts, _), vec) in enumerate(zip(rows, res.vectors)):
            click.echo(f"  {i:>3}  {label.ljust(width)}  {_span(start, end):>7}  {' '.join(parts).ljust(pw)}  "
                       f"{_vector_preview(vec)}")


def _matrix_lines(matrix) -> list[str]:
    n = len(matrix)
    lines = ["       " + "".join(f"{j:>7}" for j in range(1, n + 1))]
    for i in range(n):
        lines.append(f"  {i + 1:>3}  " + "".join(f"{float(matrix[i][j]):>7.3f}" for j in range(n)))
    return lines


@cli.command("similar-words", cls=LayersCommand)
@click.argument("pairs", nargs=-1, metavar="SENTENCE WORD [SENTENCE WORD ...]")
@token_model_options
@word_options
@click.option("--occurrence", type=click.IntRange(min=1), multiple=True,
              help="Which match of WORD in its SENTENCE to take (from 1): once for all pairs, or once per pair "
                   "in order (default 1).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON: items, matrix and sentence_matrix.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None,
              help="Also draw the word matrix as a labelled heatmap into this PNG file (needs semsearch[plot]).")
def similar_words_cmd(pairs, model, keep_hangul, layers, combine, occurrence, as_json, plot_path) -> None:
    """How similar a word is to itself (or others) in different contexts.

    Each WORD is found in its SENTENCE by its characters (case-insensitively,
    starting at a token), never by a token position. Prints the cosine matrix
    of the words' vectors (default: sum of the last four layers) and, for
    comparison, of the sentences' own vectors (layer -2, mean).

    \b
    Example:
      semsearch similar-words "I deposited money at the bank." bank "We sat on the river bank." bank
      S="After stealing money from the bank vault, the bank robber was seen fishing on the Mississippi river bank."
      semsearch similar-words "$S" bank "$S" bank "$S" bank --occurrence 1 --occurrence 2 --occurrence 3
    """
    from index.model.contextual import similar_words

    if len(pairs) < 4 or len(pairs) % 2:
        raise SemsearchError("give SENTENCE WORD pairs, at least two of them (an even number of arguments)")
    encoder = _token_encoder(model, keep_hangul)
    report = similar_words(encoder, list(zip(pairs[::2], pairs[1::2])), occurrence=list(occurrence) or 1,
                           layers=layers or list(options.WORD_LAYERS), combine=combine)
    if plot_path:
        from index.model.plots import similarity_heatmap

        click.echo(f"wrote {similarity_heatmap(report, plot_path)}", err=True)
    if as_json:
        click.echo(_dump(report.as_dict()))
        return
    click.echo(f"  {'#':>3}  word  span      sentence")
    for i, item in enumerate(report.items, 1):
        click.echo(f"  {i:>3}  {item.word}  {_span(item.start, item.end):<8}  {_snippet(item.sentence, 70)}")
    layers_text = " ".join(str(x) for x in report.layers)
    click.echo(f"word vectors ({report.combine} of layers {layers_text}), cosine:")
    for line in _matrix_lines(report.matrix):
        click.echo(line)
    click.echo(f"sentence vectors (layer {report.sentence_layer}, {encoder.pooling}), cosine:")
    for line in _matrix_lines(report.sentence_matrix):
        click.echo(line)


@cli.command("layers")
@click.argument("texts", nargs=-1)
@token_model_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None,
              help="Also draw the value spread and the similarity by layer into this PNG file (needs semsearch[plot]).")
def layers_cmd(texts, model, keep_hangul, as_json, plot_path) -> None:
    """Layer by layer: the range and spread of TEXTS' token values and, for two
    texts or more, the first text's similarity to the others.

    The similarity is the cosine of the mean token vectors (the sentence vector
    at that layer); * marks the layer sentence vectors use (-2).

    \b
    Example:
      semsearch layers "How do I reset my password?" "I forgot my login secret."
      semsearch layers "The bank raised its rates." --plot layers.png
    """
    from index.model.contextual import layer_report

    _check_texts(texts)
    encoder = _token_encoder(model, keep_hangul)
    report = layer_report(encoder, list(texts))
    if plot_path:
        from index.model.plots import layer_figure

        click.echo(f"wrote {layer_figure(report, plot_path)}", err=True)
    if as_json:
        click.echo(_dump(report.as_dict()))
        return
    sims = "".join(f"  1~{k + 2:<4}" for k in range(len(texts) - 1))
    click.echo(f"  layer      min      max     mean      std      p1      p99{sims}")
    for s in report.layers:
        mark = "*" if s.layer == report.sentence_layer else " "
        cells = "".join(f"  {x:6.3f}" for x in s.similarity)
        click.echo(f"  {s.layer:>4}{mark} {s.minimum:8.3f} {s.maximum:8.3f} {s.mean:8.3f} {s.std:8.3f} "
                   f"{s.p01:7.3f} {s.p99:8.3f}{cells}")


@cli.command("eval")
@index_option
@click.option("--queries", "queries_file", required=True, type=click.Path(dir_okay=False),
              help="BEIR queries.jsonl.")
@click.option("--qrels", "qrels_file", required=True, type=click.Path(dir_okay=False),
              help="Relevance judgements: TSV query-id, corpus-id, score.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--where", multiple=True, metavar="CLAUSE",
              help="Only documents matching CLAUSE (repeatable; the syntax of `query --where`).")
@click.option("--filter", "filter_json", default=None, metavar="JSON", help="A filter in the JSON language.")
@search_options
@hybrid_option
@quiet_option
def evaluate_cmd(index_path, queries_file, qrels_file, as_json, where, filter_json, ef_search, nprobe, hybrid,
                 quiet) -> None:
    """Measure retrieval quality: nDCG@10, MRR@10 and Recall@1/5/10/100.

    Only queries that appear in the qrels are run.

    \b
    Example:
      semsearch eval --queries data/queries.jsonl --qrels data/qrels/test.tsv --index my-index
      semsearch eval --queries data/queries.jsonl --qrels data/qrels/test.tsv --index my-index --hybrid
    """
    from search.evaluation import evaluate_index, format_table, plan_evaluation
    from search.sharded import open_searcher

    filters = _parse_where(where, filter_json)
    plan = plan_evaluation(queries_file, qrels_file)
    if plan.empty:
        click.echo(f"warning: {len(plan.empty)} empty quer(ies) count as retrieving nothing: "
                   + ", ".join(plan.empty[:5]), err=True)
    searcher = open_searcher(index_path, ef_search=ef_search, nprobe=nprobe, hybrid=hybrid)
    progress = Progress("running queries", total=len(plan.queries), quiet=quiet)
    result = evaluate_index(searcher, plan, progress=progress, where=filters)
    progress.finish()
    cfg = searcher.index.config
    used_hybrid = bool(cfg.get("hybrid", False)) if hybrid is None else hybrid
    label = f"layer {cfg['layer']} {cfg['pooling']}" + (" hybrid" if used_hybrid else "")
    if as_json:
        click.echo(_dump({"index": index_path, "model": cfg["model"], "layer": cfg["layer"],
                          "pooling": cfg["pooling"], "hybrid": used_hybrid, **result.as_dict()}))
    else:
        click.echo(format_table([(label, result)]))


# --- the service ---------------------------------------------------------------------------------
def serve_limit_options(f):
    """The bounds of one request (search.limits.Limits), each with a safe default."""
    from search.limits import Limits

    defaults = Limits()
    for name, kind, text in reversed([
        ("max_queries", int, "Queries in one POST /search."),
        ("max_query_chars", int, "Characters of one query or FAQ question."),
        ("max_texts", int, "Texts in one POST /embed."),
        ("max_text_chars", int, "Characters of one text to embed."),
        ("max_hits", int, "Hits of one request (k times its queries)."),
        ("hit_text_chars", int, "Characters of document text sent with a hit (unless full_text; the passage is whole)."),
        ("max_response_bytes", int, "Bytes of one response."),
        ("max_queue", int, "Items waiting for the model, all clients together (then 503 + Retry-After)."),
        ("body_seconds", float, "Seconds a request body may take to arrive (then 408)."),
        ("max_documents", int, "Documents in one POST /documents."),
    ]):
        f = click.option(f"--{name.replace('_', '-')}", name, type=click.IntRange(1) if kind is int else click.FloatRange(0.1),
                         default=getattr(defaults, name), show_default=True, help=text)(f)
    f = click.option("--max-connections", type=click.IntRange(1), default=256, show_default=True,
                     help="Requests answered at once (more get 503; idle connections do not count).")(f)
    f = click.option("--allow-host", multiple=True, metavar="NAME",
                     help="A Host header to answer (repeatable; default: the --host address and localhost, "
                          "any name on 0.0.0.0).")(f)
    return f


@cli.command("serve")
@index_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (loopback unless told otherwise).")
@click.option("--port", type=int, default=8000, show_default=True, help="Port to listen on (0: any free port).")
@click.option("--token-file", type=click.Path(dir_okay=False, exists=True), default=None,
              help="File holding the bearer token that writes need; without it the server is read-only.")
@click.option("--workers-threads", "workers", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Worker threads answering searches (each holds its own view of the index).")
@click.option("--max-body-mb", type=click.FloatRange(min=0.001), default=10.0, show_default=True,
              help="Largest request body accepted (413 above).")
@click.option("--batch-window-ms", type=click.FloatRange(0, 1000), default=10.0, show_default=True,
              help="Micro-batching: how long a question waits for others to share its model call.")
@click.option("--batch-max", type=click.IntRange(1, 1024), default=32, show_default=True,
              help="Micro-batching: most questions per model call (1 turns micro-batching off).")
@click.option("--engine", type=click.Choice(options.ENGINES), default="local", show_default=True,
              help="local: this process; ray: each shard a Ray Serve deployment behind one endpoint (read-only; "
                   "pip install 'semsearch[ray]').")
@click.option("--ray-address", default=None, metavar="ADDR",
              help="With --engine ray: the Ray cluster (auto: the one this machine joined; default: a new local Ray).")
@click.option("--replicas", type=click.IntRange(1), default=1, show_default=True,
              help="With --engine ray: replicas of each shard's deployment.")
@click.option("--replica-cpus", type=click.FloatRange(min=0.01), default=1.0, show_default=True,
              help="With --engine ray: CPUs Ray reserves for each replica (shards and the query gateway).")
@click.option("--log-format", type=click.Choice(["none", "text", "json"]), default="none", show_default=True,
              help="One line per request on standard error (json: route, status, ms, query length, hits).")
@click.option("--log-queries", is_flag=True, help="Put the query text in the request log (off: only its length).")
@serve_limit_options
def serve(index_path, host, port, token_file, workers, max_body_mb, batch_window_ms, batch_max, engine, ray_address,
          replicas, replica_cpus, allow_host, max_connections, log_format, log_queries, **limit_values) -> None:
    """Serve an index over HTTP: search, FAQ answers, embeddings, writes, and a search page at /.

    The model and the index load once; /health says ready after that. The API
    is documented at /docs. Writes (POST/DELETE /documents) need
    'Authorization: Bearer TOKEN' with the token of --token-file. With
    --engine ray, each shard of a sharded index is a Ray Serve deployment and
    one endpoint answers GET/POST /search and GET /health (read-only).

    \b
    Example:
      semsearch serve --index faq-index --port 8000
      curl 'http://127.0.0.1:8000/search?q=forgot+my+password&k=3'
      semsearch serve --index big --engine ray --ray-address auto --replicas 2 --host 0.0.0.0
    """
    from pathlib import Path

    from index.distributed.shards import is_sharded
    from index.indexer import Index

    if engine == "ray":
        _serve_on_ray(Path(index_path), host, port, token_file, ray_address, replicas, replica_cpus,
                      batch_window_ms, batch_max)
        return
    if ray_address:
        raise SemsearchError("--ray-address needs --engine ray")
    if is_sharded(index_path):
        raise SemsearchError(f"{index_path} is a sharded index: serve it with --engine ray, "
                             "or search it with `semsearch query`")
    Index.open(index_path).close()  # a missing or damaged index is one line, before the server starts
    token = None
    if token_file:
        token = Path(token_file).read_text(encoding="utf-8").strip()
        if not token:
            raise SemsearchError(f"--token-file {token_file} is empty")
        if Path(token_file).stat().st_mode & 0o077:
            click.echo(f"warning: --token-file {token_file} can be read by other users; chmod 600 it", err=True)
    import uvicorn

    from search.limits import Limits
    from search.service import Settings, create_app

    limits = Limits(**{name: value for name, value in limit_values.items()})
    app = create_app(Settings(index=Path(index_path), token=token, max_body_bytes=int(max_body_mb * 1024 * 1024),
                              batch_window=batch_window_ms / 1000, batch_max=batch_max, workers=workers,
                              limits=limits, allowed_hosts=_allowed_hosts(host, allow_host),
                              log_format=log_format, log_queries=log_queries))
    # Bounded requests and slow clients (search/connections.py): past max_connections requests in
    # flight a request gets 503; a connection idle for 5 s is closed (idle sockets never count);
    # headers over h11's 64 KiB are refused.
    from search.connections import IdleClosingH11Protocol, InFlightLimit

    config = uvicorn.Config(InFlightLimit(app, max_connections), host=host, port=port, log_level="warning",
                            access_log=False, http=IdleClosingH11Protocol, timeout_keep_alive=5,
                            h11_max_incomplete_event_size=64 * 1024)
    server = uvicorn.Server(config)
    original = server.startup

    async def startup(sockets=None):
        await original(sockets)
        for s in server.servers:
            for sock in s.sockets:
                address = sock.getsockname()
                click.echo(f"serving {index_path} on http://{address[0]}:{address[1]} "
                           f"({'writes need the token' if token else 'read-only'}); Ctrl-C stops", err=True)

    server.startup = startup
    server.run()


def _allowed_hosts(host: str, given: tuple[str, ...]) -> list[str] | None:
    """The Host headers ``serve`` answers: the given ones; else, on a loopback or named address,
    that address and localhost (a page elsewhere cannot reach it by DNS rebinding); on a wildcard
    address (0.0.0.0, ::) any, as clients name it by addresses this machine cannot know."""
    if given:
        return [*given, "127.0.0.1", "localhost", "[::1]", "::1"]
    if host in ("0.0.0.0", "::", ""):
        return None
    return sorted({host, f"[{host}]" if ":" in host else host, "127.0.0.1", "localhost", "[::1]", "::1"})


def _serve_on_ray(index_path, host, port, token_file, ray_address, replicas, replica_cpus, batch_window_ms,
                  batch_max) -> None:
    """`serve --engine ray`: deploy the shards on Ray Serve and wait for Ctrl-C."""
    if token_file:
        raise SemsearchError("serve --engine ray is read-only; write with `semsearch index add/delete`")
    from search.ray_serve import RayServeSettings, start, stop

    start(RayServeSettings(index=index_path, replicas=replicas, replica_cpus=replica_cpus, gateway_cpus=replica_cpus,
                           batch_max=batch_max, batch_window=batch_window_ms / 1000),
          host=host, port=port, address=ray_address)
    click.echo(f"serving {index_path} on Ray Serve at http://{host}:{port} (read-only); Ctrl-C stops", err=True)
    import signal

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)  # a service manager's stop removes the application too
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        stop()
        click.echo(f"stopped serving {index_path}", err=True)


# --- the FAQ bot --------------------------------------------------------------------------------
@cli.group("faq", cls=SemsearchGroup)
def faq_group() -> None:
    """Build a FAQ index, ask it questions, and calibrate when it should answer.

    \b
    Example:
      semsearch faq build faq.jsonl --index faq-index
      semsearch faq ask "I forgot my login secret" --index faq-index
    """


@faq_group.command("build")
@click.argument("sources", nargs=-1, required=True)
@index_option
@click.option("--force", is_flag=True, help="Replace an existing index (the old one stays until the new one is complete).")
@click.option("--question-field", default="question", show_default=True, help="Field or column holding the question.")
@click.option("--answer-field", default="answer", show_default=True, help="Field or column holding the answer.")
@click.option("--id-field", default=None, help="Field or column holding the entry id (default: id or _id); "
                                               "rows with one id are paraphrases of one question.")
@click.option("--format", "fmt", type=click.Choice(options.FORMATS), default=None, help="Input format (default: from the extension).")
@model_options()
@quiet_option
def faq_build(sources, index_path, force, question_field, answer_field, id_field, fmt, model, layer, pooling,
              max_length, precision, backend, keep_hangul, quiet) -> None:
    """Index FAQ entries (question and answer) from JSONL, CSV or TSV.

    \b
    Example:
      semsearch faq build faq.jsonl --index faq-index
      semsearch faq build faq.csv --question-field q --answer-field a --index faq-index
    """
    from index.indexer import Index
    from index.ingest.sources import ReadReport
    from search.faq import faq_documents, read_faq

    report = ReadReport()
    entries = read_faq(sources, question_field=question_field, answer_field=answer_field, id_field=id_field,
                       format=fmt, report=report)
    progress = Progress("encoding questions", quiet=quiet)
    started = time.monotonic()
    index, result = Index.build(index_path, faq_documents(entries), force=force, progress=progress, model=model,
                                layer=layer, pooling=pooling, max_length=max_length, precision=precision,
                                backend=backend, keep_hangul=keep_hangul)
    progress.finish()
    _report_add(result, index_path, time.monotonic() - started, report)
    click.echo(f"{index_path}: {len(entries)} FAQ entries; run `semsearch faq calibrate` to decide when it answers",
               err=True)


@faq_group.command("ask")
@click.argument("question", required=False)
@index_option
@click.option("--questions", "questions_file", type=click.Path(dir_okay=False),
              help="Ask every question of a file (one a line); prints one JSON line per question.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--threshold", type=float, default=None, help="Override the calibrated score threshold.")
@click.option("--where", multiple=True, metavar="CLAUSE",
              help="Only documents matching CLAUSE (repeatable; the syntax of `query --where`).")
@click.option("--filter", "filter_json", default=None, metavar="JSON", help="A filter in the JSON language.")
@click.pass_context
def faq_ask(ctx, question, index_path, questions_file, as_json, threshold, where, filter_json) -> None:
    """Answer QUESTION from a FAQ index, or say it is not sure and show the closest questions.

    \b
    Example:
      semsearch faq ask "I forgot my login secret" --index faq-index
      semsearch faq ask --questions questions.txt --index faq-index > answers.jsonl
    """
    from search.faq import FAQ

    if (question is None) == (questions_file is None):
        raise SemsearchError("give either a QUESTION or --questions FILE")
    filters = _parse_where(where, filter_json)
    faq = FAQ(index_path, threshold=threshold)
    if questions_file:
        try:
            lines = Path(questions_file).read_text(encoding="utf-8-sig").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise SemsearchError(f"{questions_file}: cannot read ({exc})") from None
        asked = [(n, line.strip()) for n, line in enumerate(lines, start=1) if line.strip()]
        for start in range(0, len(asked), 128):
            chunk = asked[start : start + 128]
            for (number, text), reply in zip(chunk, faq.answer_many([t for _, t in chunk], filters)):
                if isinstance(reply, str):
                    click.echo(f"skipped: {questions_file}:{number}: {reply}", err=True)
                    continue
                click.echo(_dump(reply.as_dict()))
        return
    if not question.strip():
        raise SemsearchError("the question is empty")
    reply = faq.answer(question, filters)
    if as_json:
        click.echo(_dump(reply.as_dict()))
        return
    if not reply.calibrated and threshold is None:
        click.echo(f"note: {index_path} is not calibrated; using the default threshold {reply.threshold} "
                   "(run `semsearch faq calibrate`)", err=True)
    if reply:
        click.echo(reply.match.answer or "(this entry has no answer text)")
        click.echo(f"    matched: {reply.match.question}  (entry {reply.match.id}, score {reply.match.score:.3f})")
    else:
        click.echo("not sure. The closest questions are:")
        for m in reply.runners_up:
            click.echo(f"  - {m.question}  (entry {m.id}, score {m.score:.3f})")


@faq_group.command("calibrate")
@index_option
@click.option("--questions", "questions_file", required=True, type=click.Path(dir_okay=False),
              help='Labelled questions, JSONL: {"question": "...", "faq_id": "..."} (faq_id null: off-topic).')
@click.option("--off-topic", "off_topic_file", type=click.Path(dir_okay=False), default=None,
              help="More off-topic questions, one a line.")
@click.option("--precision", "target", type=float, default=0.95, show_default=True,
              help="Share of given answers that must be right.")
@click.option("--apply", is_flag=True, help="When another layer reaches the target, rebuild the index with it and calibrate again.")
@click.option("--fit-questions/--no-fit-questions", default=True, show_default=True,
              help="Where the index whitens, refit the whitening with these questions' texts first.")
@click.option("--weigh-answers/--no-weigh-answers", default=True, show_default=True,
              help="Also try scoring entries by the question's closeness to their answers, and keep the weight "
                   "that answers the most at the target (0: questions alone).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def faq_calibrate(ctx, index_path, questions_file, off_topic_file, target, apply, fit_questions, weigh_answers,
                  as_json) -> None:
    """Choose when the FAQ answers: the threshold (and margin) that reach a precision with the most answers.

    Stores the choice in the index; `faq ask`, the FAQ API and the server use it.
    Exits 1 when the target cannot be reached (and says what would reach it).

    \b
    Example:
      semsearch faq calibrate --index faq-index --questions labelled.jsonl --off-topic chit-chat.txt
    """
    from search.faq_tuning import calibrate_index, read_labelled, read_off_topic

    labelled = read_labelled(questions_file)
    if off_topic_file:
        labelled += read_off_topic(off_topic_file)
    report = calibrate_index(index_path, labelled, target, apply=apply, fit_questions=fit_questions,
                             weigh_answers=weigh_answers, note=lambda line: click.echo(f"note: {line}", err=True))
    if as_json:
        click.echo(_dump(report.as_dict()))
    else:
        _print_calibration(report, index_path)
    if not report.reached:
        ctx.exit(1)


def _rates_line(r) -> str:
    off = "-" if r.off_topic_answered is None else f"{r.off_topic_answered:.1%}"
    low = f" (at least {r.precision_low:.1%} by its interval)" if r.precision_low is not None else ""
    return (f"threshold {r.threshold:.4f}, margin {r.margin:.2f}: answers {r.answered:.1%} of in-domain questions "
            f"at precision {r.precision:.1%}{low}; off-topic answered {off}")


def _print_calibration(report, index_path) -> None:
    if report.applied:
        click.echo(f"rebuilt: {report.applied}")
    c = report.calibration
    if c is not None:
        click.echo(f"{index_path}: calibrated at layer {c.layer} for precision {c.target:.0%} "
                   f"({c.in_domain} in-domain, {c.off_topic} off-topic questions)")
        click.echo("  " + _rates_line(c))
        if len(report.answered_by_weight) > 1:
            tried = ", ".join(f"{w:g}: " + ("-" if a is None else f"{a:.1%}") for w, a in report.answered_by_weight.items())
            click.echo(f"  answer weight {c.answer_weight:g} (answered at the target by weight: {tried})")
    else:
        click.echo(f"layer {report.layer} cannot reach precision {report.target:.0%}; the most precise setting:")
        click.echo("  " + _rates_line(report.top))
    for alt in report.alternatives:
        if c is not None and alt.layer == c.layer:  # the layer just applied and calibrated
            continue
        if alt.best:
            click.echo(f"layer {alt.layer} would reach it, " + _rates_line(alt.best))
            click.echo(f"  to switch: {alt.command}   (or run this command again with --apply)")
        else:
            click.echo(f"layer {alt.layer} cannot either; its most precise: " + _rates_line(alt.top))


def _register_operator_commands() -> None:
    """get, list, export, backup, restore, compact (search/cli_operate.py)."""
    from search import cli_operate

    cli_operate.register(index_group, index_option=index_option, wait_option=wait_option,
                         parse_where=_parse_where, open_index=_open_for_writing)


_register_operator_commands()


def main() -> None:
    cli(prog_name="semsearch")


if __name__ == "__main__":
    main()
