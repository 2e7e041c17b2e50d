"""Doc fragment: the `names` option of the modules whose messages name their options
(module_utils/spotbox_names.py, NAMES_SPEC)."""


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  names:
    description:
      - What the messages call the options, a mapping from option to name; an option not
        given is called by its own name. The roles pass their variable names.
    type: dict
    default: {}
"""
