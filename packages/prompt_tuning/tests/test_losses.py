"""PCCL parity: golden values computed once with the official EasyNLP `CircleLoss` (fewshot_application.py) on the
fixed batch below (features L2-normalised, float64); the numbers are stored here, the reference code is not."""

import pytest
import torch
import torch.nn.functional as F

from plmkit.prompt_tuning.losses import pair_wise_cost_sensitive_loss

RAW = [[0.3, -1.2, 0.5, 0.8], [1.1, 0.4, -0.7, 0.2], [0.2, -0.9, 0.9, 0.4],
       [-0.6, 0.3, 0.1, -1.3], [0.9, 0.8, -0.2, 0.5], [0.5, -0.4, 0.2, 1.0]]
LABELS = [0, 1, 0, 2, 1, 0]

# (margin, scale, cost_ratio) -> (loss, d loss / d raw features)
GOLDEN = {
    (0.4, 64.0, 1.0): (0.5772890137308937, [
        [-0.0054456273, -0.0067454097, 0.0007034101, -0.0085156356],
        [0.0133993318, -0.0225740436, 0.0121466411, 0.013965006],
        [-5.0209929087, -1.491763318, 4.1058060029, -10.0840345176],
        [0.0, 0.0, 0.0, 0.0],
        [0.1167494163, -0.4057423282, 0.1689232429, 0.506608073],
        [2.5087542857, 8.6221235037, -10.0787188747, 4.2102160336]]),
    (0.25, 32.0, 2.0): (4.525254817972534, [
        [-0.1090552946, -0.1788888647, -0.0761945908, -0.1798159424],
        [0.1752581146, -0.556598728, 0.1125399392, 0.5431676129],
        [-1.5119099566, -0.3805050146, 1.3206469426, -3.0716369254],
        [0.0, 0.0, 0.0, 0.0],
        [1.2170778094, -4.4667786507, 2.0428115558, 5.7732304065],
        [6.1307007204, 9.6903951368, -5.5175961016, 1.9143269148]]),
    (0.4, 64.0, 4.0): (1.8220607015142136, [
        [-0.1704494754, -0.2235647848, -0.0797485715, -0.2215857668],
        [0.0244205464, -0.257531769, -0.1447166554, -0.1257577613],
        [-1.5524803579, -0.3868354849, 1.3993535517, -3.2426851534],
        [0.0, 0.0, 0.0, 0.0],
        [0.0881596052, -0.6340397642, 0.5590588386, 1.0793998689],
        [1.6014414946, 4.0796965271, -3.5936116742, 1.5498801984]]),
}


@pytest.mark.parametrize("params", list(GOLDEN))
def test_matches_reference_circle_loss(params):
    margin, scale, cost_ratio = params
    expected_loss, expected_grad = GOLDEN[params]
    raw = torch.tensor(RAW, dtype=torch.float64, requires_grad=True)
    loss = pair_wise_cost_sensitive_loss(F.normalize(raw), torch.tensor(LABELS), margin, scale, cost_ratio)
    loss.backward()
    assert loss.item() == pytest.approx(expected_loss, rel=1e-10)
    torch.testing.assert_close(raw.grad, torch.tensor(expected_grad, dtype=torch.float64), atol=1e-8, rtol=1e-7)


def test_defaults_are_the_reference_defaults():
    feats = F.normalize(torch.tensor(RAW, dtype=torch.float64))
    assert pair_wise_cost_sensitive_loss(feats, torch.tensor(LABELS)).item() == pytest.approx(GOLDEN[(0.4, 64.0, 1.0)][0])


@pytest.mark.parametrize("labels", [[0, 1, 2, 3, 4, 5], [1, 1, 1, 1, 1, 1]])
def test_batch_without_positive_or_negative_pairs_gives_zero_with_a_graph(labels):
    raw = torch.tensor(RAW, requires_grad=True)
    loss = pair_wise_cost_sensitive_loss(F.normalize(raw), torch.tensor(labels))
    loss.backward()
    assert loss.item() == 0.0 and torch.all(raw.grad == 0)


def test_hard_pairs_cost_more():
    """Cost sensitivity: moving a positive pair apart (a harder pair) raises the loss."""
    easy = F.normalize(torch.tensor([[1.0, 0.1], [1.0, 0.0], [0.0, 1.0]]))
    hard = F.normalize(torch.tensor([[1.0, 0.9], [1.0, 0.0], [0.0, 1.0]]))
    labels = torch.tensor([0, 0, 1])
    assert pair_wise_cost_sensitive_loss(hard, labels) > pair_wise_cost_sensitive_loss(easy, labels)
