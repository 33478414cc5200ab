# cmake -DIN=file -DOUT=file.c -P embed.cmake: writes `const unsigned char pg_chat_page[]` and
# its length, so the chat page is part of the binary.
file(READ ${IN} hex HEX)
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
string(LENGTH "${hex}" n_hex)
math(EXPR n "${n_hex} / 2")
file(WRITE ${OUT} "/* generated from ${IN} by scripts/embed.cmake */\n#include <stddef.h>\nconst unsigned char pg_chat_page[] = {${bytes}0};\nconst size_t pg_chat_page_len = ${n};\n")
