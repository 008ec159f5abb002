"""Healthy: a DataLoader with two worker processes (spawned, so no lock or pool is
inherited) feeding a small training loop, with torch's pool sized to one thread.

Prints `skip: ...` and exits 77 when torch cannot be imported."""
import sys

try:
    import torch
    from torch.utils.data import DataLoader, TensorDataset
except Exception as e:  # noqa: BLE001 - any import failure means skip
    print("skip: import torch failed:", type(e).__name__, e, flush=True)
    sys.exit(77)


def main():
    torch.set_num_threads(1)
    torch.manual_seed(0)
    features = torch.randn(512, 16)
    labels = (features.sum(dim=1, keepdim=True) > 0).float()
    loader = DataLoader(TensorDataset(features, labels), batch_size=64, shuffle=True,
                        num_workers=2, multiprocessing_context="spawn")
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(),
                                torch.nn.Linear(32, 1))
    optimizer = torch.optim.Adam(model.parameters())
    loss_fn = torch.nn.BCEWithLogitsLoss()
    for epoch in range(3):
        for batch, target in loader:
            optimizer.zero_grad()
            loss = loss_fn(model(batch), target)
            loss.backward()
            optimizer.step()
        print(f"epoch {epoch}: loss {loss.item():.3f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
