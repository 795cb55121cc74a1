"""`run_extract(..., scheduler=ADDRESS)` on a local Dask cluster of 2 workers gives the same store as
a single-process run: same videos, bit-identical values, the same failure log; a rerun does nothing."""
from __future__ import annotations

import pytest

distributed = pytest.importorskip("distributed")

from losa.encoder.sampling import ClipSampling  # noqa: E402
from stages.extract.config import ExtractConfig  # noqa: E402
from stages.extract.run import run_extract  # noqa: E402
from storage import open_store  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _cfg() -> ExtractConfig:
    return ExtractConfig(preset="tiny", layers=[2], resolution=32, sampling=ClipSampling(4, 1, 2), batch_clips=4,
                         chunk_steps=3, device="cpu")


def _contents(path):
    reader = open_store(path)
    out = {v: (reader.times(v).tolist(), {k: a.tobytes() for k, a in reader.read(v).items()})
           for v in reader.videos()}
    return out, sorted(f["video_id"] for f in reader.failures())


@pytest.mark.slow  # ~15-30 s: a local cluster and two extractions
def test_dask_cluster_store_equals_single_process(video_dir, tmp_path):
    (video_dir / "broken.mp4").write_bytes(b"not a video")
    single = run_extract(_cfg(), video_dir, tmp_path / "one.zarr", progress=False)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster:
        summary = run_extract(_cfg(), video_dir, tmp_path / "dask.zarr", progress=False,
                              scheduler=cluster.scheduler_address)
        assert (summary.done, summary.failed, summary.clips) == (single.done, single.failed, single.clips) \
            == (3, 1, single.clips)
        assert summary.failed_videos == ["broken"]
        # the command line, rerun on the same store: nothing is extracted twice
        from click.testing import CliRunner

        from pipeline.cli_extract import main

        again = CliRunner().invoke(main, [str(video_dir), "--store", str(tmp_path / "dask.zarr"), "--preset", "tiny",
                                          "--layers", "2", "--resolution", "32", "--frames", "4",
                                          "--clip-stride", "2", "--batch-clips", "4", "--chunk-steps", "3",
                                          "--device", "cpu", "--no-progress",
                                          "--dask-scheduler", cluster.scheduler_address])
        assert "extracted 0 video(s), 0 clips" in again.output and "3 already present" in again.output
        assert "1 FAILED (broken)" in again.output and again.exit_code == 1
    got, want = _contents(tmp_path / "dask.zarr"), _contents(tmp_path / "one.zarr")
    assert got == want and len(got[0]) == 3 and got[1] == ["broken"]


def test_unreachable_scheduler_is_one_line(tmp_path):
    from stages.errors import StageError
    from stages.extract.cluster import run_extract_dask

    with pytest.raises(StageError, match="cannot reach the Dask scheduler at tcp://127.0.0.1:1"):
        run_extract_dask(_cfg(), [], tmp_path / "s.zarr", {}, "tcp://127.0.0.1:1", connect_timeout=1)
