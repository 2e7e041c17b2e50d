"""Doc fragment: the AWS connection options (region, profile, endpoint_url, ...) that
AnsibleAWSModule adds to every spot_* module.

amazon.aws documents them in three fragments (common.modules, region.modules, boto3),
which each module would otherwise list; a fragment cannot name other fragments (ansible's
add_fragments reads one level), so this one merges their text as add_fragments does:
options by name, lists (notes, requirements) one after another. Their words stay
amazon.aws's, of the version installed.
"""

from __future__ import annotations

import yaml
from ansible_collections.amazon.aws.plugins.doc_fragments import boto3, common, region


def merged(*texts: str) -> str:
    doc: dict = {}
    for text in texts:
        for key, value in yaml.safe_load(text).items():
            if isinstance(value, dict):
                doc.setdefault(key, {}).update(value)
            else:
                doc.setdefault(key, []).extend(value)
    return yaml.safe_dump(doc, sort_keys=False)


class ModuleDocFragment:
    DOCUMENTATION = merged(common.ModuleDocFragment.MODULES, region.ModuleDocFragment.MODULES,
                           boto3.ModuleDocFragment().MODULES)
