"""The demo's data and loss: BERT's masking, sentence pairs, masked-token loss per step.

References are written here from BERT's description (numpy log-softmax, the
80/10/10 rule), not taken from the package.
"""

from __future__ import annotations

import numpy as np

import tf_bertopt
from tf_bertopt.cli import demo, demo_corpus


def _vocabulary():
    return demo_corpus.Vocabulary.from_text(demo_corpus.generate_text(400))


def test_generated_corpus_is_small_deterministic_text():
    text = demo_corpus.generate_text()
    assert text == demo_corpus.generate_text()
    assert 50_000 < len(text.encode()) < 400_000
    assert text != demo_corpus.generate_text(seed=1)


def test_sentence_pairs_are_cls_a_sep_b_sep_then_padding():
    vocabulary = demo_corpus.Vocabulary(["the", "fox", "is", "red", "."])
    rows = demo_corpus.sentence_pairs("the fox is red .\nthe fox .\n", 12, vocabulary)
    words = [vocabulary.words[i] for i in rows[0]]
    assert words == ["[CLS]", "the", "fox", "is", "red", ".", "[SEP]", "the", "fox", ".", "[SEP]", "[PAD]"]


def test_masking_targets_words_only_at_bert_rates():
    vocabulary = _vocabulary()
    rng = np.random.default_rng(0)
    rows = rng.integers(5, len(vocabulary), size=(4000, 32)).astype(np.int32)
    rows[:, 0], rows[:, -4:] = vocabulary.ids["[CLS]"], vocabulary.ids["[PAD]"]
    inputs, labels = demo_corpus.mask_tokens(np.random.default_rng(1), rows, vocabulary)
    targets = labels >= 0
    assert not targets[:, 0].any() and not targets[:, -4:].any()
    np.testing.assert_array_equal(labels[targets], rows[targets])
    np.testing.assert_array_equal(inputs[~targets], rows[~targets])
    assert abs(targets[:, 1:-4].mean() - 0.15) < 0.005
    masked = inputs[targets] == vocabulary.mask_id
    kept = inputs[targets] == rows[targets]
    assert abs(masked.mean() - 0.8) < 0.01
    assert abs(kept.mean() - (0.1 + 0.1 / (len(vocabulary) - 5))) < 0.01  # a random draw may hit the word itself


def test_recorded_loss_is_the_masked_token_mean_of_each_batch():
    corpus = demo.Corpus.generated(16, sentences=200)
    batches = demo.masked_lm_batches(corpus, 3, 4)
    # Learning rate 0: the weights stay as initialised, so every batch's loss can be recomputed after training.
    run = demo.pretrain(
        tf_bertopt.create_optimizer(0.0, 3, 0), batches, len(corpus.vocabulary), hidden=8, layers=1, verbose=0
    )
    expected = []
    for inputs, labels in zip(*batches):
        shifted = np.asarray(run.model(inputs), np.float64)
        shifted -= shifted.max(-1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
        targets = labels >= 0
        expected.append(-np.mean(log_probs[targets, labels[targets]]))
    np.testing.assert_allclose(run.loss, expected, rtol=1e-5)
    assert run.learning_rate == [0.0, 0.0, 0.0]
