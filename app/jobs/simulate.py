"""The simulate job: app.simulation's runs for a project with gold labels, measured on a held-out gold split,
stored as one JSON result."""
from __future__ import annotations

from app.jobs.context import JobContext
from app.jobs.features import ensure_features
from app.settings import Settings
from app.simulation import SimulationConfig, run_simulation
from app.worker import Worker
from storage.files import latest_artifact, project_dir, save_json
from storage.models import Job


def simulate(job: Job, ctx: JobContext) -> str:
    """Idempotent: a rerun after the result was stored finds it (by job id) and runs nothing."""
    with ctx.db.read() as s:
        if latest_artifact(s, job.project_id, "simulation", job_id=job.id) is not None:
            return "the simulation was already stored (by an earlier attempt of this job); nothing to do"
    ensure_features(ctx, job.project_id)
    config = SimulationConfig.from_dict(job.params)
    settings = Settings(home=ctx.home, db_url=ctx.db.url)

    def worker_for(run: Settings, name: str):
        return Worker(run, name=name, device=ctx.device, quiet=True).run_once

    result = run_simulation(settings, job.project_id, config, worker_for, progress=ctx.progress)
    path = project_dir(ctx.home, job.project_id) / "simulations" / f"simulation-{job.id}.json"
    with ctx.db.write() as s:
        save_json(s, path, project_id=job.project_id, kind="simulation", data=result, meta={"job_id": job.id})
    split = result["config"]["holdout_split"]
    return (f"{len(config.strategies)} strategies x {len(config.seeds)} seeds, {len(result['points'])} points, "
            f"measured on {split['size']} held-out gold items ({split['rule']})")
