/* One wording for JSON value kinds in error messages ("... is a string, expected a number"),
 * shared by the config.json readers and the safetensors header parser. */
#ifndef M2O_JSON_NAMES_H
#define M2O_JSON_NAMES_H

#include <cJSON.h>

/* "a number", "an array", ...; "nothing" for NULL (an absent key). */
const char *json_type_name(const cJSON *j);

#endif
