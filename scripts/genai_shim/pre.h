/* Force-included before each onnxruntime-genai source: headers its own headers use without
 * including them (they get them through generators.h in the full build). */
#pragma once
#include <cstddef>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <variant>
#include <vector>
