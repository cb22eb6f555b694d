"""Adversarial scores: how likely each image is adversarial, in [0, 1].

Kernel density of the penultimate ("final hidden layer") features per predicted class, fitted on
clean images (Feinman et al. 2017, arXiv:1703.00410; Pang et al., NeurIPS 2018), combined with
the predictive uncertainty (softmax entropy by default: our models have no MC dropout) by a
logistic regression when adversarial examples of the fitting images are available, or by a
clean-only tail probability otherwise. LID (Ma et al., ICLR 2018) is an optional component.

>>> from aevis_core.scores import AdversarialScorer, penultimate_features  # doctest: +SKIP
>>> scorer = AdversarialScorer().fit(entry, clean_x, clean_y, adv_x=adv_x)  # doctest: +SKIP
>>> scorer.score(entry, other_x)  # (N,) in [0, 1]                          # doctest: +SKIP

Evaluate with :func:`cross_fit_scores` (never on the fitting images); ``bench/scores.py``
reports the cross-fitted ROC-AUC and the ablation behind the defaults. Why KD + entropy
(2-fold cross-fitted AUC, clean vs MI-FGSM, demo images): KD alone 0.994 / 0.970 / 0.962 and
entropy alone 0.999 / 0.984 / 0.815 on ResNet-20 (8/255) / ResNet-56 (8/255) / EfficientNet-Lite0
(4/255); combined 1.000 / 0.995 / 0.955. LID is weaker (0.75 / 0.59 / 0.91) and adds nothing;
head MC dropout is weaker alone and slower; PCA before KD hurts (0.84 on EfficientNet).
MI-FGSM makes predictions *over*-confident, so the logistic weight of the uncertainty is
negative (the opposite of Feinman et al.'s BIM/FGSM finding); the clean-only score is two-sided.
Known limit: a scorer fitted with MI-FGSM examples does not flag minimal-perturbation attacks
(C&W, DeepFool) or single-step FGSM; fit it with examples of the attack being analysed.
"""

from aevis_core.scores.evaluate import cross_fit_scores, roc_auc, stratified_folds
from aevis_core.scores.features import classifier_head, find_classifier, penultimate_features
from aevis_core.scores.scorer import COMPONENTS, UNCERTAINTIES, AdversarialScorer, ScoreConfig

__all__ = [
    "COMPONENTS", "UNCERTAINTIES", "AdversarialScorer", "ScoreConfig", "classifier_head",
    "cross_fit_scores", "find_classifier", "penultimate_features", "roc_auc", "stratified_folds",
]
