from radscale.config.load import load_job, validate_job
from radscale.config.specs import JobSpec

__all__ = ["JobSpec", "load_job", "validate_job"]
