// Writes the random checkpoint with Qwen3.5-35B-A3B's attention widths (tests/e2e/qwen3_5_ref.mjs,
// deterministic: the same bytes every time) into DIR, with ids.json holding the prompt the CUDA
// suite runs it on, so transformers_precision.py can measure the original model's own float16 /
// bfloat16 error on it before the suite starts.   node tests/cuda/make_q35_big.mjs DIR
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { BIG, BIG_IDS, makeBigCheckpoint } from '../e2e/qwen3_5_ref.mjs';

const dir = process.argv[2];
if (!dir) throw new Error('usage: node tests/cuda/make_q35_big.mjs DIR');
makeBigCheckpoint(dir, BIG, 'tests/fixtures/qwen3_5-moe-tiny');
writeFileSync(join(dir, 'ids.json'), JSON.stringify(BIG_IDS));
