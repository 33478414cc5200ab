# cmake -DIN=file -DOUT=file.c [-DNAME=symbol] -P embed.cmake: writes `const unsigned char NAME[]`
# (default pg_chat_page) and `const size_t NAME_len`, so the file is part of the binary. An empty
# IN (a file that was not found at configure time) gives an empty array: length 0.
if(NOT NAME)
  set(NAME pg_chat_page)
endif()
if(IN)
  file(READ ${IN} hex HEX)
else()
  set(hex "")
endif()
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
string(LENGTH "${hex}" n_hex)
math(EXPR n "${n_hex} / 2")
file(WRITE ${OUT} "/* generated from ${IN} by scripts/embed.cmake */\n#include <stddef.h>\nconst unsigned char ${NAME}[] = {${bytes}0};\nconst size_t ${NAME}_len = ${n};\n")
