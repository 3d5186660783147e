"""GPU jobs as the plan sizes them (configs/paper.yaml), the settings' validation, `prh models ls`'s estimates, and
local `snakemake --resources gpu=N` runs keeping distinct devices."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from prh.cli import main
from prh.config import ConfigError, validate_config
from prh.plan import Plan

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def paper() -> Plan:
    return Plan(validate_config(yaml.safe_load((ROOT / "configs" / "paper.yaml").read_text())))


def test_paper_jobs_request_gpus_by_model_size(paper: Plan) -> None:
    assert paper.config["gpus"] == 4 and paper.config["gpu_memory_gb"] == 80 and paper.config["offload"] == "none"
    wanted = {"huggyllama--llama-65b": 2, "meta-llama--Meta-Llama-3-70B": 2, "mistralai--Mixtral-8x7B-v0.1": 2,
              "huggyllama--llama-30b": 1, "huggyllama--llama-7b": 1, "vit-tiny-patch16-224.augreg-in21k": 1}  # fmt: skip
    assert {m: paper.gpus(m) for m in wanted} == wanted
    assert paper.gpu_mem_mb("huggyllama--llama-65b") == 147000  # 130 GB x 1.1 + 2 GB per GPU
    assert paper.mem_mb("huggyllama--llama-65b") == 20000  # not 394 GB: the weights stream to the GPUs shard by shard


def test_settings_change_the_requests(paper: Plan) -> None:
    cfg = dict(paper.config)
    small = Plan(validate_config({**cfg, "gpu_memory_gb": 40}))
    assert small.gpus("meta-llama--Meta-Llama-3-70B") == 4  # 141.2 GB over GPUs holding 34.5 GB each
    one = Plan(validate_config({**cfg, "gpus": 1}))
    assert one.gpus("huggyllama--llama-65b") == 1 and not one.estimate("huggyllama--llama-65b").fits
    off = Plan(validate_config({**cfg, "gpus": 1, "offload": "cpu"}))
    assert off.mem_mb("huggyllama--llama-65b") == 130 * 3 * 1000 + 4000  # the weights live in host memory
    cpu = Plan(validate_config({**cfg, "gpus": 0}))
    assert cpu.gpus("huggyllama--llama-65b") == 0 and cpu.gpu_mem_mb("huggyllama--llama-65b") == 0
    assert paper.gpu_settings() == {"slots": 4, "memory_gb": 80, "offload": "none",
                                    "offload_folder": "features/.offload", "wait_s": 600}  # fmt: skip


def test_hub_datasets_get_resources_for_their_download(paper: Plan) -> None:
    assert paper.dataset_resources("wit") == {"mem_mb": 16000, "runtime": 120}


@pytest.mark.parametrize(
    ("override", "field"),
    [({"gpu_memory_gb": 0}, "gpu_memory_gb"), ({"gpu_memory_gb": "80GB"}, "gpu_memory_gb"),
     ({"offload": "nvme"}, "offload"), ({"gpu_wait_s": -1}, "gpu_wait_s")],  # fmt: skip
)
def test_bad_gpu_settings_name_their_field(override: dict, field: str) -> None:
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    with pytest.raises(ConfigError) as err:
        validate_config({**cfg, **override})
    assert field in str(err.value) and "\n" not in str(err.value)


def test_models_ls_shows_estimates_and_uncached_rows(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    cfg = tmp_path / "c.yaml"
    cfg.write_text(textwrap.dedent("""\
        gpus: 4
        datasets: {digits: {source: digits, n: 50}}
        models:
          llama-65b: {source: hf, id: huggyllama/llama-65b, n_params: 65000000000, dtype: bfloat16}
          llama-7b: {source: hf, id: huggyllama/llama-7b, n_params: 7000000000, dtype: bfloat16}
        """))
    assert main(["--config", str(cfg), "models", "ls"]) in (0, None)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["model", "source", "modality", "commit", "digest", "n_params", "dtype", "gpus",
                                "gpu_gb", "host_gb"]  # fmt: skip
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert rows["llama-65b"][3:] == ["-", "not", "cached", "6.5e+10", "bfloat16", "2", "147.0", "20.0"]
    assert rows["llama-7b"][8:] == ["1", "17.4", "20.0"]


SNAKEFILE = """
import json, os, time
from prh.devices import acquire_gpus

rule all:
    input: expand("out/{i}.json", i=range(6))

rule job:
    output: "out/{i}.json"
    resources: gpu=lambda w: 2 if int(w.i) % 3 == 0 else 1
    run:
        with acquire_gpus(resources.gpu, 2, "locks", wait_s=60, poll_s=0.01) as ids:
            start = time.time()
            time.sleep(0.5)
            Path(output[0]).write_text(json.dumps({"ids": ids, "env": os.environ["CUDA_VISIBLE_DEVICES"],
                                                   "start": start, "end": time.time()}))
"""


@pytest.mark.slow
def test_local_resources_gpu_keep_distinct_slots(tmp_path: Path) -> None:
    """`snakemake --resources gpu=2 -j 4`: 2-GPU and 1-GPU jobs never hold one device at once."""
    (tmp_path / "Snakefile").write_text("from pathlib import Path\n" + SNAKEFILE)
    env = {k: v for k, v in os.environ.items() if k not in ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_GPUS", "SLURM_STEP_GPUS")}
    proc = subprocess.run([str(Path(sys.executable).with_name("snakemake")), "-j", "4", "--resources", "gpu=2"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads((tmp_path / "out" / f"{i}.json").read_text()) for i in range(6)]
    assert sorted(len(r["ids"]) for r in rows) == [1, 1, 1, 1, 2, 2]
    assert all(r["env"] == ",".join(r["ids"]) and set(r["ids"]) <= {"0", "1"} for r in rows)
    for dev in ("0", "1"):
        spans = sorted((r["start"], r["end"]) for r in rows if dev in r["ids"])
        assert all(e1 <= s2 for (_, e1), (s2, _) in zip(spans, spans[1:])), (dev, spans)
    ones = sorted((r["start"], r["end"]) for r in rows if len(r["ids"]) == 1)
    assert any(s2 < e1 for (_, e1), (s2, _) in zip(ones, ones[1:]))  # 1-GPU jobs did run side by side


def test_a_job_whose_gpus_cannot_hold_its_model_stops_before_loading(tmp_path: Path, monkeypatch) -> None:
    from prh import devices
    from prh.errors import PrhError
    from prh.pipeline import on_gpus

    monkeypatch.setattr(devices, "resolve_device", lambda d: "cuda")  # a CUDA machine, as far as placement goes
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    spec = {"source": "hf", "id": "meta-llama/Meta-Llama-3-70B", "n_params": 70.6e9, "dtype": "bfloat16"}
    gpu = {"slots": 4, "memory_gb": 80, "offload": "none", "offload_folder": str(tmp_path / "off"), "wait_s": 0}
    with pytest.raises(PrhError, match=r"^models.llama: 141.2 GB of weights need 157 GB of GPU memory but 1 GPU\(s\)"):
        with on_gpus("llama", spec, "bfloat16", str(tmp_path), "cuda", 1, gpu):
            pytest.fail("the model was about to load")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    with on_gpus("llama", spec, "bfloat16", str(tmp_path), "cuda", 2, gpu) as (dev, load):
        assert dev == "cuda" and load.keywords["placement"] == devices.Placement(2, 80, "none", str(tmp_path / "off"))
    with on_gpus("llama", spec, "bfloat16", str(tmp_path), "cuda", 1, {**gpu, "offload": "disk"}) as (dev, load):
        assert load.keywords["placement"].offload == "disk"  # asked for: the rest goes to disk
