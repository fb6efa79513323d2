"""Makes assets/HangulSans.ttf: NanumGothic (NAVER, SIL OFL 1.1) cut down to what vislang draws
(Basic Latin, Latin-1, general punctuation, CJK punctuation, Hangul compatibility jamo and all
11,172 Hangul syllables), without hinting, and renamed as the OFL requires of a modified
version ("NanumGothic" is a Reserved Font Name).

    apt-get install fonts-nanum && pip install fonttools
    python3 assets/make_hangul_font.py /usr/share/fonts/truetype/nanum/NanumGothic.ttf

Measured: 4,691,820 bytes -> about 1.3 MB.
"""
import sys

from fontTools import subset
from fontTools.ttLib import TTFont

SOURCE = sys.argv[1] if len(sys.argv) > 1 else "/usr/share/fonts/truetype/nanum/NanumGothic.ttf"
OUT = "assets/HangulSans.ttf"
FAMILY = "Vislang Hangul Sans"

options = subset.Options()
options.hinting = False
options.desubroutinize = True
options.name_IDs = ["*"]
font = TTFont(SOURCE)
subsetter = subset.Subsetter(options)
ranges = [(0x20, 0x7E), (0xA0, 0xFF), (0x2010, 0x2027), (0x3000, 0x303F), (0x3131, 0x318E),
          (0xAC00, 0xD7A3)]
subsetter.populate(unicodes=[c for lo, hi in ranges for c in range(lo, hi + 1)])
subsetter.subset(font)
for table in ("TSI0", "TSI1", "TSI2", "TSI3", "TSI5"):
    if table in font:
        del font[table]
names = font["name"]
for record in list(names.names):
    if record.nameID in (1, 4, 16, 18, 21):
        names.setName(FAMILY if record.nameID != 4 else FAMILY + " Regular", record.nameID,
                      record.platformID, record.platEncID, record.langID)
    elif record.nameID == 3:
        names.setName(FAMILY + ": subset of NanumGothic for vislang", 3, record.platformID,
                      record.platEncID, record.langID)
    elif record.nameID == 6:
        names.setName("VislangHangulSans-Regular", 6, record.platformID, record.platEncID,
                      record.langID)
    elif record.nameID == 17:
        names.setName("Regular", 17, record.platformID, record.platEncID, record.langID)
font.save(OUT)
print(f"wrote {OUT}")
