"""Poem forms on hand-made poems."""

import pytest

from tinylm.poetry import classify_form, verses


@pytest.mark.parametrize(("content", "form"), [
    ("床前明月光，疑是地上霜。\n举头望明月，低头思故乡。", "五绝"),
    ("朝辞白帝彩云间，千里江陵一日还。\n两岸猿声啼不住，轻舟已过万重山。", "七绝"),
    ("国破山河在，城春草木深。\n感时花溅泪，恨别鸟惊心。\n"
     "烽火连三月，家书抵万金。\n白头搔更短，浑欲不胜簪。", "五律"),
    ("风急天高猿啸哀，渚清沙白鸟飞回。\n无边落木萧萧下，不尽长江滚滚来。\n"
     "万里悲秋常作客，百年多病独登台。\n艰难苦恨繁霜鬓，潦倒新停浊酒杯。", "七律"),
    ("床前明月光，疑是地上霜。\n举头望明月，低头思故乡啊。", "其他"),  # a verse of six
    ("床前明月光，疑是地上霜。", "其他"),  # two verses only
    ("四言四句，四言四句。\n四言四句，四言四句。", "其他"),
])
def test_classify_form(content, form):
    assert classify_form(content) == form


def test_verses_split_at_punctuation_and_newlines():
    expected = ["床前明月光", "疑是地上霜", "举头望明月"]
    assert verses("床前明月光，疑是地上霜。\n举头望明月！") == expected
