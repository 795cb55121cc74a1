"""`losa-store`: inspect and export activation stores (Zarr directory or HDF5 file).

    losa-store info STORE [--json]
    losa-store failures STORE [--json]
    losa-store export STORE --format npy --layer N --out DIR [--cells mean|flatten] [--overwrite]
    losa-store export STORE --format npy --feature fc_norm --out DIR   (VideoMAEv2 TAD features)
    losa-store export STORE --format hdf5 --out FILE.h5 [--compression gzip|lzf|none] [--overwrite]
    losa-store merge OUT SHARD... [--chunk-steps 256]   (per-shard stores, e.g. from object storage)
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from pipeline.errors import CliError, exit_code_of, is_user_error, message_of

__all__ = ["main", "human_bytes"]


def human_bytes(n: float) -> str:
    """1536 → '1.5 KiB'."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def _open(path: Path):
    from storage import open_store

    try:
        return open_store(path)
    except Exception as exc:
        if not is_user_error(exc):
            raise  # a bug: keep the traceback
        raise CliError(message_of(exc), exit_code_of(exc)) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Inspect and export LoSA activation stores."""


@main.command()
@click.argument("store", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the summary and provenance as JSON.")
def info(store: Path, as_json: bool) -> None:
    """Videos, layers, shapes, size on disk, compression ratio and failures of STORE."""
    with _open(store) as reader:
        summary = reader.summary()
        prov = reader.provenance
    if as_json:
        click.echo(json.dumps({"summary": summary, "provenance": prov}, indent=1, ensure_ascii=False))
        return
    shapes = ", ".join(f"{layer}: {'x'.join(map(str, s))}" for layer, s in summary["shapes"].items())
    click.echo(f"store        {summary['path']}")
    click.echo(f"videos       {summary['videos']} complete, {summary['total_steps']} steps in total")
    click.echo(f"layers       {summary['layers']}  [cells x channels per step: {shapes or '-'}]")
    click.echo(f"dtype        {', '.join(summary['dtypes']) or prov.get('store_dtype', '-')}")
    click.echo(f"on disk      {human_bytes(summary['bytes_on_disk'])} "
               f"(raw {human_bytes(summary['raw_bytes'])}, compression x{summary['compression_ratio']:.2f})")
    click.echo(f"failures     {summary['failures']}"
               + (f"  (details: losa-store failures {store})" if summary["failures"] else ""))
    if prov:
        bb = prov.get("backbone", {})
        ck = prov.get("checkpoint", {})
        weights = ck.get("sha256", "?")
        weights = f"random (seed {ck.get('seed')})" if weights == "random" else f"sha256 {weights[:16]}..."
        click.echo(f"backbone     {bb.get('preset', bb.get('name', '?'))}, weights {weights}")
        click.echo(f"recipe       {json.dumps(prov.get('sampling', {}))}, res {prov.get('resolution')} "
                   f"{prov.get('resize')}, norm {prov.get('norm')}, temporal {prov.get('temporal')}, "
                   f"grid {prov.get('grid')}, precision {prov.get('precision')}, "
                   f"position table {prov.get('pos_table', 'trilinear (before it was recorded)')}")
        click.echo(f"feature      {prov.get('feature', '-')} (package {prov.get('package_version', '?')})")
        ref = prov.get("reference_feature")
        if ref:
            click.echo(f"reference    {ref.get('name')}: {ref.get('definition')} "
                       f"(export: losa-store export {store} --format npy --feature {ref.get('name')} --out DIR)")


@main.command()
@click.argument("store", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the failure records as JSON.")
def failures(store: Path, as_json: bool) -> None:
    """Videos that could not be extracted (and not completed since), with the reason."""
    with _open(store) as reader:
        records = reader.failures()
    if as_json:
        click.echo(json.dumps(records, indent=1, ensure_ascii=False))
        return
    if not records:
        click.echo(f"{store}: no failures")
        return
    for rec in records:
        click.echo(f"{rec.get('video_id')}\t{rec.get('source')}\t{rec.get('reason')}")
    click.echo(f"{len(records)} failure(s)", err=True)


@main.command()
@click.argument("store", type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["npy", "hdf5"]), required=True,
              help="npy: one [T, C] file per video for one layer; hdf5: the whole store in one file.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Output folder (npy) or file (hdf5).")
@click.option("--layer", type=int, default=None, help="Layer to export as npy (default: the deepest stored).")
@click.option("--cells", type=click.Choice(["mean", "flatten"]), default="mean", show_default=True,
              help="npy: average the cells of a step, or concatenate them.")
@click.option("--compression", type=click.Choice(["gzip", "lzf", "none"]), default="gzip", show_default=True,
              help="hdf5 dataset compression.")
@click.option("--overwrite", is_flag=True,
              help="Replace an existing output (hdf5: the file; npy: a non-empty folder, replaced whole).")
@click.option("--feature", default=None,
              help="npy: export this stored feature instead of a layer (fc_norm: VideoMAEv2's TAD "
                   "feature, the input of ActionFormer's 69.6 on THUMOS-14).")
def export(store: Path, fmt: str, out: Path, layer: int | None, cells: str, compression: str,
           overwrite: bool, feature: str | None) -> None:
    """Export STORE for ActionFormer/OpenTAD (npy) or as a single HDF5 file."""
    from storage import convert_store, export_npy

    with _open(store) as reader:
        try:
            if fmt == "hdf5":
                if layer is not None:
                    raise click.UsageError("--layer applies to --format npy only (hdf5 copies every layer)")
                path = convert_store(reader, out, compression=compression, overwrite=overwrite)
                click.echo(f"wrote {path} ({len(reader.videos())} videos, {human_bytes(path.stat().st_size)})")
                return
            stored = reader.layers()
            if not stored:
                raise click.ClickException(f"{store}: no complete videos to export")
            if feature is not None:
                if layer is not None:
                    raise click.UsageError("give --layer or --feature, not both")
                index = export_npy(reader, out, None, feature=feature, overwrite=overwrite)
                click.echo(f"wrote {len(reader.videos())} .npy files of feature {feature} to {out} "
                           f"(index: {index.name})")
                return
            chosen = stored[-1] if layer is None else layer
            index = export_npy(reader, out, chosen, cells=cells, overwrite=overwrite)
            click.echo(f"wrote {len(reader.videos())} .npy files of layer {chosen} to {out} (index: {index.name})")
        except Exception as exc:
            if not is_user_error(exc):
                raise  # a bug: keep the traceback
            raise CliError(message_of(exc), exit_code_of(exc)) from None


@main.command()
@click.argument("out", type=click.Path(path_type=Path))
@click.argument("shards", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--chunk-steps", type=click.IntRange(1), default=256, show_default=True,
              help="Time steps per chunk in the merged store.")
def merge(out: Path, shards: tuple[Path, ...], chunk_steps: int) -> None:
    """Merge per-shard stores SHARDS into the Zarr store OUT (same provenance; resumable)."""
    from storage.merge import merge_stores

    try:
        s = merge_stores(out, list(shards), chunk_steps=chunk_steps)
    except Exception as exc:
        if not is_user_error(exc):
            raise  # a bug: keep the traceback
        raise CliError(message_of(exc), exit_code_of(exc)) from None
    click.echo(f"{out}: copied {s.copied} video(s) from {len(s.shards)} shard(s); {s.already_present} already "
               f"present, {s.duplicates} duplicate(s), {s.failures} failure(s) carried over")


if __name__ == "__main__":  # pragma: no cover
    main()
