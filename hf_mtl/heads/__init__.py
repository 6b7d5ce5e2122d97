"""Task heads as classes, one per task kind, behind a registry.

``head_class(kind)`` returns the :class:`TaskHead` subclass of a kind; ``@register_head("my_kind")`` adds
a kind (``Task(kind="my_kind")`` is then valid and ``MultiTaskModel`` builds that head). Built-in kinds:
single and pair sentence classification, regression, token classification and seq2seq generation.
"""

from hf_mtl.heads.base import IGNORE_INDEX, ClassifierHead, TaskHead
from hf_mtl.heads.classification import PairClassificationHead, SequenceClassificationHead
from hf_mtl.heads.registry import head_class, register_head, registered_kinds
from hf_mtl.heads.regression import RegressionHead
from hf_mtl.heads.seq2seq import Seq2SeqHead
from hf_mtl.heads.token_classification import TokenClassificationHead

__all__ = [
    "IGNORE_INDEX",
    "ClassifierHead",
    "PairClassificationHead",
    "RegressionHead",
    "Seq2SeqHead",
    "SequenceClassificationHead",
    "TaskHead",
    "TokenClassificationHead",
    "head_class",
    "register_head",
    "registered_kinds",
]
