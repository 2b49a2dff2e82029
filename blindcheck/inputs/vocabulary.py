"""The manifest's vocabulary: the column names recognised and the label values read as member / non-member."""

from __future__ import annotations

LABEL_COLUMNS = ("label", "split", "member", "is_member", "membership")


PATH_COLUMNS = ("path", "audio", "audio_path", "file", "file_name", "filename", "filepath", "wav", "audio_file")


ID_COLUMNS = ("id", "utt_id", "utterance_id", "uid", "key", "clip_id")


TEXT_COLUMNS = ("text", "transcript", "transcription", "sentence", "normalized_text")


# Text that is not a transcript: captions, prompts, descriptions, tags and lyrics (music and sound benchmarks:
# AudioCaps and Song Describer ``caption``, MusicCaps ``caption`` and ``aspect_list``, Clotho ``caption_1`` ..
# ``caption_5`` and its metadata's ``keywords``, WavCaps ``description``, LP-MusicCaps ``tag``). Each base name is one
# text source; a column named ``<base>_<n>`` or ``<base><n>`` (Clotho's five captions) joins that base's source
# (see :func:`blindcheck.inputs.manifest.text_sources`).
CAPTION_COLUMNS = ("caption", "captions", "prompt", "prompts", "description", "descriptions", "tags", "tag",
                   "lyrics", "aspect_list", "keywords")


SPEAKER_COLUMNS = ("speaker", "speaker_id", "spk", "spk_id", "client_id")


MEMBER_VALUES = frozenset({"1", "1.0", "true", "t", "yes", "y", "member", "members", "in", "train", "training"})


NONMEMBER_VALUES = frozenset(
    {
        "0", "0.0", "false", "f", "no", "n", "non-member", "nonmember", "non_member", "non-members",
        "nonmembers", "non member", "out", "test", "testing", "heldout", "held-out", "held_out",
    }
)


KALDI_LABEL_FILES = ("utt2label", "utt2split", "utt2member")
