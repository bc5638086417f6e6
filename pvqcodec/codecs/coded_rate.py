"""The `--bits` target of the entropy-coded codecs (ecsq, ectcq, eclattice): a coded rate,
every byte of the tensor's parameter block and payloads counted, that their encoders meet
within 1 percent under."""

from ..errors import InputError

MIN_BITS, MAX_BITS = 0.25, 12.0


def target_bits(codec_name: str, bits) -> float:
    """`bits` as a float, or an InputError naming the codec."""
    try:
        b = float(bits)
    except (TypeError, ValueError):
        raise InputError(f"{codec_name} --bits must be a number of bits per weight, got {bits!r}") from None
    if not MIN_BITS <= b <= MAX_BITS:
        raise InputError(f"{codec_name} --bits must be in {MIN_BITS:g}..{MAX_BITS:g} (coded bits per weight), got {bits}")
    return b
