/* Stand-in for onnxruntime-genai's src/generators.h when only its config parser is compiled
 * (scripts/build_genai.sh): the standard headers config.cpp relies on through the umbrella
 * header, its Config types, and the one container helper it calls. Written for moe2onnx. */
#pragma once
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>
#include <variant>
#include <vector>

#include "filesystem.h"
#include "config.h"

namespace Generators {
template <typename Container, typename Value>
bool contains(const Container &c, Value &&v)
{
    return std::find(c.begin(), c.end(), v) != c.end();
}
}  // namespace Generators
