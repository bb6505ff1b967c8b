#ifndef ONCE_CRDKAFKA_SHIM_H
#define ONCE_CRDKAFKA_SHIM_H
#include <librdkafka/rdkafka.h>
#endif
