"""Batches: rows with thoughts aligned on their first <|latent|>, everything else padded exactly."""

import torch

from coconut.data.collate import collate_prompts, collate_training

L, PAD = 9, 0


def test_thought_rows_align_on_their_first_latent_and_pad_exactly():
    rows = [
        [1, 2, 3, 4, L, L, 5, 6],  # first latent at 4
        [1, 2, L, L, L, 7],  # first latent at 2: shifted right by 2
        [1, 2, 3],  # no thoughts: not shifted
    ]
    labels = [[-100] * 6 + [5, 6], [-100] * 5 + [7], [1, 2, 3]]
    batch = collate_training(rows, labels, L, PAD)
    assert batch["input_ids"].tolist() == [
        [1, 2, 3, 4, L, L, 5, 6],
        [PAD, PAD, 1, 2, L, L, L, 7],
        [1, 2, 3, PAD, PAD, PAD, PAD, PAD],
    ]
    assert batch["labels"].tolist() == [
        [-100, -100, -100, -100, -100, -100, 5, 6],
        [-100, -100, -100, -100, -100, -100, -100, 7],
        [1, 2, 3, -100, -100, -100, -100, -100],
    ]
    assert batch["attention_mask"].tolist() == [[1] * 8, [0, 0] + [1] * 6, [1, 1, 1] + [0] * 5]
    assert batch["position_ids"].tolist() == [list(range(8)), [0, 0, *range(6)], [0, 1, 2, 0, 0, 0, 0, 0]]
    assert all(t.dtype == torch.long for t in batch.values())


def test_legibility_targets_pad_to_the_most_thoughts_and_the_largest_set():
    rows = [[1, L, L, 2], [1, L, 2]]
    batch = collate_training(rows, rows, L, PAD, thought_targets=[((3,), (4, 5)), ((6,),)])
    assert batch["thought_targets"].tolist() == [[[3, -1], [4, 5]], [[6, -1], [-1, -1]]]


def test_prompts_are_left_padded_to_end_in_the_last_column():
    batch = collate_prompts([[1, 2, 3], [4]], PAD)
    assert batch["input_ids"].tolist() == [[1, 2, 3], [PAD, PAD, 4]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [0, 0, 1]]
    assert batch["position_ids"].tolist() == [[0, 1, 2], [0, 0, 0]]
