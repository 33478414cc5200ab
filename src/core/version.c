/* The library's version at run time (include/pagoda.h's macros, compiled in). */
#include "pagoda.h"

const char *pagoda_version_string(void) { return PAGODA_VERSION_STRING; }

int pagoda_version_number(void) { return PAGODA_VERSION; }
