"""Students: text classifiers trained with Lightning that expose per-class probabilities."""

from pgkd.students.base import RestoreBestWeights, Student
from pgkd.students.finetuned import FineTunedStudent
from pgkd.students.frozen import FrozenEncoderStudent

__all__ = ["Student", "FineTunedStudent", "FrozenEncoderStudent", "RestoreBestWeights"]
