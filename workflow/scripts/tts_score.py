"""Score, fit and test one dataset's test-time scaling (see prh.tts.score_job)."""

from prh.pipeline import logged
from prh.runtime import prepare_job
from prh.tts import score_job

with logged(snakemake.log[0]):
    prepare_job(snakemake.threads)
    score_job(snakemake.params.settings, list(snakemake.input.receipts), snakemake.params.store,
              {t: snakemake.output[t] for t in ("curves", "fits", "summary")})
