/* hx-exit [CODE]: exits at once with CODE (default 0), before the shim's Start can return. */
#include <stdlib.h>

int main(int argc, char **argv) { return argc > 1 ? atoi(argv[1]) : 0; }
