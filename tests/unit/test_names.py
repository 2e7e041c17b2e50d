"""O(option) in a module's messages: the option's own name, or the caller's."""

from spotbox_names import named


def test_an_option_is_called_by_its_own_name_unless_the_caller_names_it() -> None:
    text = "CUDA 10.0 was asked for (O(version)) but O(require_toolkit) is false"
    assert named(text) == "CUDA 10.0 was asked for (version) but require_toolkit is false"
    assert named(text, {"version": "cuda_version"}) == (
        "CUDA 10.0 was asked for (cuda_version) but require_toolkit is false")


def test_results_are_named_throughout() -> None:
    result = {"msg": "set O(device)", "notes": ["O(device) and O(volume_id)"], "size": 3,
              "plain": "O(not an option)"}
    assert named(result, {"device": "data_volume_device"}) == {
        "msg": "set data_volume_device", "notes": ["data_volume_device and volume_id"],
        "size": 3, "plain": "O(not an option)"}
