"""fairseq `--user-dir` entry: importing it registers model `veco` and task `translation_from_pretrained_veco`.

The code lives in `plmkit.veco.fairseq` (imported here by its absolute name, so the registrations happen once even
when plmkit imported it already)."""

import plmkit.veco.fairseq.model  # noqa: F401
import plmkit.veco.fairseq.task  # noqa: F401
